-- Argo CD health of a kubetune.io/ContinuousPretrain, from spec.suspend and the Ready and
-- CorpusReadable conditions. Written for Lua 5.1 (Argo CD's gopher-lua); tested with lua5.1
-- and lua5.4.
local hs = {}
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: no new runs start"
  return hs
end
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the ContinuousPretrain"
  return hs
end
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end
local function describe(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return condition.reason or condition.type
end
local corpus = conditions["CorpusReadable"]
if corpus ~= nil and corpus.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(corpus)
  return hs
end
local ready = conditions["Ready"]
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the first run"
  if ready ~= nil then
    hs.message = describe(ready)
  end
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.status = "Healthy"
local generation = 0
if status.currentModel ~= nil and status.currentModel.generation ~= nil then
  generation = status.currentModel.generation
end
hs.message = "Serving generation " .. generation
if status.activeRun ~= nil and status.activeRun ~= "" then
  hs.message = hs.message .. "; run " .. status.activeRun .. " in progress"
end
return hs

-- Argo CD health of a kubetune.io/FineTuneJob, from status.phase. Written for Lua 5.1
-- (Argo CD's gopher-lua); tested with lua5.1 and lua5.4.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the job"
  return hs
end
-- A status written for an older spec says nothing about the current one.
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = phase
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
else
  -- Pending, Validating, Queued, Running
  hs.status = "Progressing"
  if phase == "Running" and status.progress ~= nil and status.progress.percent ~= nil then
    message = string.format("%s (%.0f%%)", message, status.progress.percent)
  end
end
hs.message = message
return hs

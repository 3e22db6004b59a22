"""Pure functions: FineTuneJob model -> manifest dicts. No I/O, no clock (time is passed in)."""

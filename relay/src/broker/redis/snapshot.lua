-- A run's head, epoch and state, and with a `since` the retained frames after it, read atomically.
-- Read-only: a run that does not exist is answered as empty and nothing is created for it, so
-- that readers (of runs that may never exist) cannot fill Redis with keys.
--
-- KEYS[1] the run's meta hash   KEYS[2] the run's event stream
-- ARGV[1] since, or "-" for no replay
--
-- Replies {head, epoch, state, state_seq, t, tail frame × t, replay, frames…}: the stored state
-- is at state_seq (the state is stored every few events only) and the tail frames are the events
-- after it up to head, for the reader to fold onto it; replay is "none", "gap" or "events". A run
-- that does not exist has head 0 and an empty epoch (its first publish gives it one).
local meta, stream = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', meta, 'head', 'epoch', 'state', 'state_seq')
local head = tonumber(cur[1] or '0') or 0
local epoch = cur[2]
local state = cur[3] or ''
local state_seq = tonumber(cur[4] or '') or head
if not epoch then
  -- A stream left without its meta is stale (publish.lua drops it when it creates the run).
  epoch = ''
  head = 0
  state = ''
  state_seq = 0
end
local reply = {string.format('%d', head), epoch, state, string.format('%d', state_seq), '0'}
if state_seq < head then
  local entries = redis.call('XRANGE', stream, string.format('%d-0', state_seq + 1), '+')
  reply[5] = string.format('%d', #entries)
  for _, entry in ipairs(entries) do
    reply[#reply + 1] = entry[2][2]
  end
end
if ARGV[1] == '-' then
  reply[#reply + 1] = 'none'
  return reply
end
local since = tonumber(ARGV[1])
if since == head then
  reply[#reply + 1] = 'events'
  return reply
end
if since > head then
  reply[#reply + 1] = 'gap'
  return reply
end
local first = string.format('%d-0', since + 1)
local entries = redis.call('XRANGE', stream, first, '+')
if #entries == 0 or entries[1][1] ~= first then
  reply[#reply + 1] = 'gap'
  return reply
end
reply[#reply + 1] = 'events'
for _, entry in ipairs(entries) do
  -- entry = {id, {'f', frame}}
  reply[#reply + 1] = entry[2][2]
end
return reply

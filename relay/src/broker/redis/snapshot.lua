-- A run's head, epoch and state, and with a `since` the retained frames after it, read atomically.
--
-- KEYS[1] the run's meta hash   KEYS[2] the run's event stream
-- ARGV[1] since, or "-" for no replay
-- ARGV[2] a fresh epoch, stored when the run has none yet, so that a subscriber that arrives
--         before the first event and the publishers agree on the epoch
-- ARGV[3] TTL in ms of a meta hash created here
--
-- Replies {head, epoch, state, replay, frames…} with replay "none", "gap" or "events".
local meta, stream = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', meta, 'head', 'epoch', 'state')
local head = tonumber(cur[1] or '0') or 0
local epoch = cur[2]
local state = cur[3] or ''
if not epoch then
  epoch = ARGV[2]
  head = 0
  state = ''
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'head', '0', 'epoch', epoch)
  redis.call('PEXPIRE', meta, ARGV[3])
end
local reply = {string.format('%d', head), epoch, state}
if ARGV[1] == '-' then
  reply[4] = 'none'
  return reply
end
local since = tonumber(ARGV[1])
if since == head then
  reply[4] = 'events'
  return reply
end
if since > head then
  reply[4] = 'gap'
  return reply
end
local first = string.format('%d-0', since + 1)
local entries = redis.call('XRANGE', stream, first, '+')
if #entries == 0 or entries[1][1] ~= first then
  reply[4] = 'gap'
  return reply
end
reply[4] = 'events'
for i, entry in ipairs(entries) do
  -- entry = {id, {'f', frame}}
  reply[4 + i] = entry[2][2]
end
return reply

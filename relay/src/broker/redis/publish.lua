-- Appends a batch of encoded events to a run, all or none, and fans them out.
--
-- KEYS[1] the run's meta hash (head, epoch, state, state_seq, done)
-- KEYS[2] the run's event stream
-- KEYS[3] the run's ingested-message ids (sorted set, scored by when they were appended)
-- ARGV[1] the run's live channel
-- ARGV[2] the head seq the publisher computed its frames and state for
-- ARGV[3] the epoch it computed them for (for a run that does not exist yet: a fresh epoch)
-- ARGV[4] the run state JSON after the batch, or "" to leave the stored state as it is: the
--         state is stored every few events only, and readers fold the events after it
-- ARGV[5] "1" when the batch ends the run
-- ARGV[6] events retained per run (stream MAXLEN)
-- ARGV[7] key TTL in ms while the run is live, ARGV[8] after its terminal event
-- ARGV[9] k: how many ingested-message ids follow (0 for a publish request)
-- ARGV[10] how long, in ms, an ingested-message id is remembered
-- ARGV[11..10+k] one id per frame: the message each frame was ingested from
-- ARGV[11+k..] the encoded event frames, seqs head+1, head+2, …
--
-- Replies {"ok"}, or without writing anything
-- {kind, extra, head, epoch, state, state_seq, frame…} with the stored state, the seq it is at,
-- and the frames after it up to head (the publisher folds them onto the state):
-- - kind "dup", extra "i,j,…": frames i, j… (1-based) come from messages another relay already
--   appended; the publisher drops them and tries again with the rest;
-- - kind "conflict" or "finished", extra "": the publisher's view was stale (another relay
--   published, or the run was lost and recreated), or the run has already ended. The publisher
--   recomputes from the reply and tries again.
local meta, stream = KEYS[1], KEYS[2]
-- Not the state: it can be large, and is only needed to answer a refusal.
local cur = redis.call('HMGET', meta, 'head', 'epoch', 'done', 'state_seq')
local head = tonumber(cur[1] or '0') or 0
local epoch = cur[2]
local expected = tonumber(ARGV[2])

local function refuse(kind, extra)
  if not epoch then
    return {kind, extra, '0', '', '', '0'}
  end
  local state_seq = tonumber(cur[4] or '') or head
  local state = redis.call('HGET', meta, 'state') or ''
  local reply = {kind, extra, string.format('%d', head), epoch, state,
    string.format('%d', state_seq)}
  if state_seq < head then
    local entries = redis.call('XRANGE', stream, string.format('%d-0', state_seq + 1), '+')
    for _, entry in ipairs(entries) do
      reply[#reply + 1] = entry[2][2]
    end
  end
  return reply
end

local k = tonumber(ARGV[9])
local now = 0
if k > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[10]))
  local dups = {}
  for i = 1, k do
    if redis.call('ZSCORE', KEYS[3], ARGV[10 + i]) then
      dups[#dups + 1] = string.format('%d', i)
    end
  end
  if #dups > 0 then
    return refuse('dup', table.concat(dups, ','))
  end
end
if not epoch then
  -- A run unknown here (new, expired, or lost with the server's data). A stream left without
  -- its meta would carry stale ids: drop it so the new epoch starts clean.
  if expected ~= 0 then
    return refuse('conflict', '')
  end
  redis.call('DEL', stream)
  epoch = ARGV[3]
  head = 0
  redis.call('HSET', meta, 'state', '', 'state_seq', '0')
elseif epoch ~= ARGV[3] or head ~= expected then
  return refuse('conflict', '')
end
if cur[3] == '1' then
  return refuse('finished', '')
end
local n = #ARGV - 10 - k
local frames = {}
for i = 1, n do
  local frame = ARGV[10 + k + i]
  redis.call('XADD', stream, 'MAXLEN', ARGV[6], string.format('%d-0', head + i), 'f', frame)
  frames[i] = frame
end
local done = ARGV[5]
redis.call('HSET', meta, 'head', string.format('%d', head + n), 'epoch', epoch, 'done', done)
if ARGV[4] ~= '' then
  redis.call('HSET', meta, 'state', ARGV[4], 'state_seq', string.format('%d', head + n))
end
local ttl = ARGV[7]
if done == '1' then
  ttl = ARGV[8]
end
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', stream, ttl)
if k > 0 then
  for i = 1, k do
    redis.call('ZADD', KEYS[3], now, ARGV[10 + i])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[10])
end
redis.call('PUBLISH', ARGV[1], epoch .. '\n' .. table.concat(frames, '\n'))
return {'ok'}

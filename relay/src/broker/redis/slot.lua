-- Takes one concurrent-stream slot of a workspace, counted across every relay.
--
-- KEYS[1] the workspace's lease set (member: relay slot id, score: lease expiry in ms)
-- ARGV[1] the slot id   ARGV[2] the limit   ARGV[3] the lease in ms
--
-- Leases of relays that died stop being renewed and lapse. Redis' clock is the only one used,
-- so relays with skewed clocks still agree. Replies 1 when the slot was taken, 0 at the limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

-- Renews this relay's stream slot leases of one workspace.
--
-- KEYS[1] the workspace's lease set   ARGV[1] the lease in ms   ARGV[2..] the slot ids
-- Only slots still present are renewed (ZADD XX): a lapsed lease is not resurrected, so the
-- count never exceeds the limit. Replies how many were renewed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', until_ms, ARGV[i])
end
if renewed > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return renewed

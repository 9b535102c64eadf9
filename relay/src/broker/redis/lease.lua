-- Takes or renews the ingest lease: the one relay that holds it turns ingested Pub/Sub messages
-- into run events, so that each message is appended once however many relays receive it.
--
-- KEYS[1] the lease key   ARGV[1] this relay's id   ARGV[2] the lease in ms
-- Replies 1 when this relay holds the lease now, 0 when another does.
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0

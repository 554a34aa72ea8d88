-- Count calls admitted while Redis was away in their keys' rate windows.
-- KEYS: 1 the spend marker, then R rate bucket hashes.
-- ARGV: for each hash: its ttl ms, its number of buckets B, then B bucket/count pairs.
-- Returns 1, or 0 without writing when the marker is absent: a Redis that lost its data gets its
-- windows rebuilt from Postgres by keymgmt's restore, these calls' events included.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local a = 1
for k = 2, #KEYS do
  local buckets = tonumber(ARGV[a + 1])
  for b = 1, buckets do
    redis.call('HINCRBY', KEYS[k], ARGV[a + 2 * b], ARGV[a + 2 * b + 1])
  end
  redis.call('PEXPIRE', KEYS[k], ARGV[a])
  a = a + 2 + 2 * buckets
end
return 1

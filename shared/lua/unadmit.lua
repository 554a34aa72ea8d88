-- Take back an admission that was counted but is not to be served: in a cluster a key and its
-- end user are admitted by one script each, in their own slots, and one may refuse what the
-- other admitted; and a lease's unused slots (proxy/lease.py). Uncounts the requests in each of
-- their rate windows and releases the reservation.
-- KEYS: 1 reservation expiries (zset), 2 reservation amounts (hash), 3.. rate bucket hashes.
-- ARGV: 1 reservation id ("" if none), 2 the time the admission was counted at (ms), then each
--   rate hash's window ms, then the number of requests to uncount (1 when not given).
local BUCKETS = 60
local reservation, at = ARGV[1], tonumber(ARGV[2])
local calls = tonumber(ARGV[#KEYS + 1] or '1')
if reservation ~= '' and redis.call('ZREM', KEYS[1], reservation) == 1 then
  local amount = tonumber(redis.call('HGET', KEYS[2], reservation) or '0')
  redis.call('HDEL', KEYS[2], reservation)
  redis.call('HINCRBY', KEYS[2], 'total', -amount)
end
for k = 3, #KEYS do
  local bucket = math.floor(at / (tonumber(ARGV[k]) / BUCKETS))
  -- A bucket gone meanwhile (expired, or lost with its Redis) is not made up anew below zero.
  if redis.call('HEXISTS', KEYS[k], bucket) == 1 then
    if redis.call('HINCRBY', KEYS[k], bucket, -calls) <= 0 then redis.call('HDEL', KEYS[k], bucket) end
  end
end
return 1

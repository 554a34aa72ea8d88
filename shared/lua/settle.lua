-- Settle one request: release its reservation and charge its real cost, in one atomic step.
-- KEYS: 1 lifetime spend, 2 windowed spend buckets (hash), 3 reservation expiries (zset),
--       4 reservation amounts (hash)
-- ARGV: 1 cost (nano-USD), 2 cost window ms (0: no windowed limit), 3 reservation id ("" if none)
-- Returns the lifetime spend after the charge.
local BUCKETS = 60
local cost, cost_window, reservation = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]

if reservation ~= '' and redis.call('ZREM', KEYS[3], reservation) == 1 then
  local amount = tonumber(redis.call('HGET', KEYS[4], reservation) or '0')
  redis.call('HDEL', KEYS[4], reservation)
  redis.call('HINCRBY', KEYS[4], 'total', -amount)
end
if cost <= 0 then return tonumber(redis.call('GET', KEYS[1]) or '0') end
if cost_window > 0 then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local width = cost_window / BUCKETS
  redis.call('HINCRBY', KEYS[2], math.floor(now / width), ARGV[1])
  redis.call('PEXPIRE', KEYS[2], cost_window + math.ceil(width))
end
return redis.call('INCRBY', KEYS[1], ARGV[1])

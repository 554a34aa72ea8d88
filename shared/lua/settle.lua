-- Settle a batch of calls: release each reservation and charge each real cost, atomically.
-- For call i (from 0): KEYS[4i+1] lifetime spend, KEYS[4i+2] windowed spend buckets (hash),
--   KEYS[4i+3] reservation expiries (zset), KEYS[4i+4] reservation amounts (hash);
--   ARGV[3i+1] cost (nano-USD), ARGV[3i+2] cost window ms (0: no windowed limit),
--   ARGV[3i+3] reservation id ("" if none).
-- Returns the number of calls settled.
local BUCKETS = 60
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local calls = #KEYS / 4

for i = 0, calls - 1 do
  local spend, window_spend = KEYS[4 * i + 1], KEYS[4 * i + 2]
  local expiries, amounts = KEYS[4 * i + 3], KEYS[4 * i + 4]
  local cost, cost_window = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local reservation = ARGV[3 * i + 3]
  if reservation ~= '' and redis.call('ZREM', expiries, reservation) == 1 then
    local amount = tonumber(redis.call('HGET', amounts, reservation) or '0')
    redis.call('HDEL', amounts, reservation)
    redis.call('HINCRBY', amounts, 'total', -amount)
  end
  if cost > 0 then
    if cost_window > 0 then
      local width = cost_window / BUCKETS
      redis.call('HINCRBY', window_spend, math.floor(now / width), ARGV[3 * i + 1])
      redis.call('PEXPIRE', window_spend, cost_window + math.ceil(width))
    end
    redis.call('INCRBY', spend, ARGV[3 * i + 1])
  end
end
return calls

-- Settle a batch of calls, once: append their usage events, release each reservation and charge
-- each real cost.
-- KEYS[1]: the usage event stream, KEYS[2]: the batch's marker, present once it was applied.
-- ARGV[1]: the stream's approximate maximum length, ARGV[2]: the name of the one field of an
--   entry, ARGV[3]: how long the marker lasts (ms), ARGV[4]: the number of events E,
--   ARGV[5] .. ARGV[4 + E]: the events (JSON, stored as they are).
-- Then for call i (from 0): KEYS[4i+3] lifetime spend, KEYS[4i+4] windowed spend buckets (hash),
--   KEYS[4i+5] reservation expiries (zset), KEYS[4i+6] reservation amounts (hash);
--   ARGV[A+3i+1] cost (nano-USD), ARGV[A+3i+2] cost window ms (0: no windowed limit),
--   ARGV[A+3i+3] reservation id ("" if none), where A = 4 + E.
-- Returns the number of calls settled, or -1 when the batch had been applied already.
local BUCKETS = 60
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return -1 end
local stream, max_length, field, events = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[4])
for e = 5, 4 + events do
  redis.call('XADD', stream, 'MAXLEN', '~', max_length, '*', field, ARGV[e])
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local calls = (#KEYS - 2) / 4
local base = 4 + events

for i = 0, calls - 1 do
  local spend, window_spend = KEYS[4 * i + 3], KEYS[4 * i + 4]
  local expiries, amounts = KEYS[4 * i + 5], KEYS[4 * i + 6]
  local cost_arg = ARGV[base + 3 * i + 1]
  local cost, cost_window = tonumber(cost_arg), tonumber(ARGV[base + 3 * i + 2])
  local reservation = ARGV[base + 3 * i + 3]
  if reservation ~= '' and redis.call('ZREM', expiries, reservation) == 1 then
    local amount = tonumber(redis.call('HGET', amounts, reservation) or '0')
    redis.call('HDEL', amounts, reservation)
    redis.call('HINCRBY', amounts, 'total', -amount)
  end
  if cost > 0 then
    if cost_window > 0 then
      local width = cost_window / BUCKETS
      redis.call('HINCRBY', window_spend, math.floor(now / width), cost_arg)
      redis.call('PEXPIRE', window_spend, cost_window + math.ceil(width))
    end
    redis.call('INCRBY', spend, cost_arg)
  end
end
return calls

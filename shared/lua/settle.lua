-- Settle a batch of calls, once and whole: append their usage events, release each reservation
-- and charge each real cost.
-- KEYS[1]: the usage event stream, KEYS[2]: the number of the last batch applied from the
--   sending replica.
-- ARGV[1]: the stream's approximate maximum length, ARGV[2]: the name of the one field of an
--   entry, ARGV[3]: this batch's number, ARGV[4]: how long the replica's number is kept (ms),
--   ARGV[5]: the number of events E, ARGV[6] .. ARGV[5 + E]: the events (JSON, stored as they are).
-- Then for call i (from 0): KEYS[4i+3] lifetime spend, KEYS[4i+4] windowed spend buckets (hash),
--   KEYS[4i+5] reservation expiries (zset), KEYS[4i+6] reservation amounts (hash);
--   ARGV[A+3i+1] cost (nano-USD), ARGV[A+3i+2] cost window ms (0: no windowed limit),
--   ARGV[A+3i+3] reservation id ("" if none), where A = 5 + E.
-- Returns the number of calls settled, -1 when the batch had been applied already, or
-- {-2, i, why} when call i's keys hold data it cannot be applied to (then nothing was applied).
-- A script that fails part-way keeps what it wrote, so everything a write could fail on is
-- checked before the first one, and the batch's number is stored last: a batch is applied whole,
-- or not at all and may be sent again.
local BUCKETS = 60

local function integer(value)
  local number = tonumber(value)
  if number == nil or number ~= math.floor(number) or number < 0 then
    error('settle: not a non-negative integer: ' .. tostring(value))
  end
  return number
end

-- Why `key` cannot take writes meant for a `kind`, or nil.
local usable = {}
local function unusable(key, kind)
  if usable[key] then return nil end
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= kind then return key .. ' holds a ' .. found end
  if found == 'string' and not string.match(redis.call('GET', key), '^-?%d+$') then
    return key .. ' holds no integer'
  end
  usable[key] = true
  return nil
end

local function check(key, kind)
  local why = unusable(key, kind)
  if why then error('settle: ' .. why) end
end

local number, keep_ms, events = integer(ARGV[3]), integer(ARGV[4]), integer(ARGV[5])
local base = 5 + events
local calls = (#KEYS - 2) / 4
if calls ~= math.floor(calls) or #ARGV ~= base + 3 * calls then error('settle: bad arguments') end
check(KEYS[2], 'string')
if number <= tonumber(redis.call('GET', KEYS[2]) or '0') then
  -- A write all the same, so that a WAIT after this call also covers the batch applied before.
  redis.call('PEXPIRE', KEYS[2], keep_ms)
  return -1
end
check(KEYS[1], 'stream')
for i = 0, calls - 1 do
  integer(ARGV[base + 3 * i + 1])
  integer(ARGV[base + 3 * i + 2])
  local why = unusable(KEYS[4 * i + 3], 'string') or unusable(KEYS[4 * i + 4], 'hash')
    or unusable(KEYS[4 * i + 5], 'zset') or unusable(KEYS[4 * i + 6], 'hash')
  if why then return {-2, i, why} end
end

local stream, max_length, field = KEYS[1], ARGV[1], ARGV[2]
for e = 6, 5 + events do
  redis.call('XADD', stream, 'MAXLEN', '~', max_length, '*', field, ARGV[e])
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

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
redis.call('SET', KEYS[2], number, 'PX', keep_ms)
return calls

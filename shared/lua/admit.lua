-- Admit one request, or refuse it, in one atomic step.
-- KEYS: 1 rate buckets (hash), 2 lifetime spend, 3 windowed spend buckets (hash),
--       4 reservation expiries (zset), 5 reservation amounts (hash, plus field "total"),
--       6 the spend marker (absent while a Redis that lost its data waits for its spend)
-- ARGV: 1 rate limit N (0: none), 2 rate window ms, 3 lifetime limit (nano-USD, 0: none),
--       4 windowed limit (nano-USD, 0: none), 5 cost window ms, 6 reservation (nano-USD),
--       7 reservation id, 8 reservation lifetime ms
-- Returns {1, requests left in the window (-1: no rate limit), lifetime and windowed budget now
-- committed (spend + reservations, nano-USD; -1 where the key has no such limit)},
-- {0, reason, retry after ms (-1: never)}, or {2} when spend is not restored yet.
-- A call is admitted while spend plus the reservations of other calls is below a cost limit; its
-- own reservation need not fit. Refused: 'cost' or 'window' when spend alone reached the limit,
-- 'cost_reserved' or 'window_reserved' when reservations in flight make up the rest.
-- Windows are sliding and bucketed (BUCKETS buckets a window); every bucket that overlaps the
-- last window counts whole, so no interval of one window ever holds more than the limit.
local BUCKETS = 60
-- Lapsed reservations expired per call: unpack() fails past about 8,000 values.
local LAPSE_STEP = 1000
-- A call refused for reservations in flight retries when the earliest one lapses, or sooner:
-- most are settled long before they lapse.
local RESERVED_WAIT_MS = 5000
if redis.call('EXISTS', KEYS[6]) == 0 then return {2} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Sum of the buckets overlapping (now - window, now]; drops older ones. Also returns the
-- buckets in age order, to tell when enough of them will have left the window.
local function window_sum(key, window)
  local width = window / BUCKETS
  local oldest = math.floor((now - window) / width)
  local fields = redis.call('HGETALL', key)
  local total, live, stale = 0, {}, {}
  for i = 1, #fields, 2 do
    local bucket, value = tonumber(fields[i]), tonumber(fields[i + 1])
    if bucket < oldest then
      stale[#stale + 1] = fields[i]
    else
      total = total + value
      live[#live + 1] = {bucket, value}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return total, live, width
end

-- How long until the window sum has dropped by at least `excess`.
local function wait_for(live, width, window, excess)
  local dropped = 0
  for _, entry in ipairs(live) do
    dropped = dropped + entry[2]
    if dropped >= excess then
      return math.max(1, (entry[1] + 1) * width + window - now)
    end
  end
  return window
end

local rate_limit, rate_window = tonumber(ARGV[1]), tonumber(ARGV[2])
local lifetime_limit, window_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost_window, amount = tonumber(ARGV[5]), tonumber(ARGV[6])
local reservation, reservation_ms = ARGV[7], tonumber(ARGV[8])

local requests, rate_live, rate_width = 0, nil, nil
if rate_limit > 0 then
  requests, rate_live, rate_width = window_sum(KEYS[1], rate_window)
  if requests >= rate_limit then
    return {0, 'rate', wait_for(rate_live, rate_width, rate_window, requests - rate_limit + 1)}
  end
end

local reserved = 0
if lifetime_limit > 0 or window_limit > 0 then
  -- Reservations of replicas that died lapse here rather than holding budget for ever.
  -- Any number of them is expired over a few calls, LAPSE_STEP at a time.
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, LAPSE_STEP)
  if #lapsed > 0 then
    local amounts = redis.call('HMGET', KEYS[5], unpack(lapsed))
    local released = 0
    for _, value in ipairs(amounts) do released = released + (tonumber(value) or 0) end
    redis.call('ZREM', KEYS[4], unpack(lapsed))
    redis.call('HDEL', KEYS[5], unpack(lapsed))
    redis.call('HINCRBY', KEYS[5], 'total', -released)
  end
  reserved = tonumber(redis.call('HGET', KEYS[5], 'total') or '0')
end

local function reserved_wait()
  local earliest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local wait = RESERVED_WAIT_MS
  if #earliest == 2 then wait = math.min(wait, tonumber(earliest[2]) - now) end
  return math.max(1000, wait)
end

-- A limit spend alone has reached is reported before one that reservations hold.
local lifetime_spent, window_spent = 0, 0
if lifetime_limit > 0 then
  lifetime_spent = tonumber(redis.call('GET', KEYS[2]) or '0')
  if lifetime_spent >= lifetime_limit then return {0, 'cost', -1} end
end
if window_limit > 0 then
  local live, width
  window_spent, live, width = window_sum(KEYS[3], cost_window)
  if window_spent >= window_limit then
    return {0, 'window', wait_for(live, width, cost_window, window_spent - window_limit + 1)}
  end
end
local lifetime_committed, window_committed = -1, -1
if lifetime_limit > 0 then
  if lifetime_spent + reserved >= lifetime_limit then
    return {0, 'cost_reserved', reserved_wait()}
  end
  lifetime_committed = lifetime_spent + reserved + amount
end
if window_limit > 0 then
  if window_spent + reserved >= window_limit then
    return {0, 'window_reserved', reserved_wait()}
  end
  window_committed = window_spent + reserved + amount
end

if rate_limit > 0 then
  local bucket = math.floor(now / rate_width)
  redis.call('HINCRBY', KEYS[1], bucket, 1)
  redis.call('PEXPIRE', KEYS[1], rate_window + math.ceil(rate_width))
end
if (lifetime_limit > 0 or window_limit > 0) and amount > 0 then
  redis.call('ZADD', KEYS[4], now + reservation_ms, reservation)
  redis.call('HSET', KEYS[5], reservation, ARGV[6])
  redis.call('HINCRBY', KEYS[5], 'total', ARGV[6])
  redis.call('PEXPIRE', KEYS[4], reservation_ms)
  redis.call('PEXPIRE', KEYS[5], reservation_ms)
end
local left = -1
if rate_limit > 0 then left = rate_limit - requests - 1 end
return {1, left, lifetime_committed, window_committed}

-- Admit one request, or refuse it, in one atomic step.
-- KEYS: 1 rate buckets (hash), 2 lifetime spend, 3 windowed spend buckets (hash),
--       4 reservation expiries (zset), 5 reservation amounts (hash, plus field "total"),
--       6 the spend marker (absent while a Redis that lost its data waits for its spend)
-- ARGV: 1 rate limit N (0: none), 2 rate window ms, 3 lifetime limit (nano-USD, 0: none),
--       4 windowed limit (nano-USD, 0: none), 5 cost window ms, 6 reservation (nano-USD),
--       7 reservation id, 8 reservation lifetime ms
-- Returns {1, requests left in the window (-1: no rate limit), lifetime and windowed budget now
-- committed (spend + reservations, nano-USD; -1 where the key has no such limit), the time the
-- call was counted at (ms: its rate buckets, should the call be taken back by unadmit.lua),
-- the lease's slots and budget granted (0, 0: none)},
-- {0, reason, retry after ms (-1: never)}, or {2} when spend is not restored yet.
-- A call is admitted while spend plus the reservations of other calls is below a cost limit; its
-- own reservation need not fit. Refused: 'cost' or 'window' when spend alone reached the limit,
-- 'cost_reserved' or 'window_reserved' when reservations in flight make up the rest.
-- Windows are sliding and bucketed (BUCKETS buckets a window); every bucket that overlaps the
-- last window counts whole, so no interval of one window ever holds more than the limit.
-- Extra rate windows (a key's rateLimits), after ARGV[8]: ARGV[9] their number W, then for
-- window i (from 1) ARGV[8 + 2i] its limit and ARGV[9 + 2i] its length ms, KEYS[6 + i] its
-- buckets. A refusal by a rate window is {0, 'rate', retry after ms, limit, window ms}.
-- The call's end user, after those: ARGV[10 + 2W] 1 when there is one, then ARGV[11 + 2W] ..
-- ARGV[15 + 2W] as ARGV[1] .. ARGV[5] for the user, and KEYS[7 + W] .. KEYS[11 + W] as KEYS[1]
-- .. KEYS[5]; its refusals are named 'user_rate', 'user_cost', 'user_window', ...
-- A lease (proxy/lease.py), after the user section: ARGV[P] slots wanted, ARGV[P + 1] budget
-- wanted (nano-USD), P = 11 + 2W without a user, 16 + 2W with one. Capped at 1/LEASE_SHARE of
-- what is left, after the call, in every rate window and cost limit (the user's too, counted and
-- reserved alike: both are on this one Redis), so that the whole lease fits beside the calls
-- and reservations counted already; when it does, its slots are counted in every rate window and
-- its budget is reserved with the call's own reservation (one id, one lifetime: an abandoned
-- lease lapses like an abandoned call). The call is admitted or refused as without a lease.
local BUCKETS = 60
-- Lapsed reservations expired per call: unpack() fails past about 8,000 values.
local LAPSE_STEP = 1000
-- A call refused for reservations in flight retries when the earliest one lapses, or sooner:
-- most are settled long before they lapse.
local RESERVED_WAIT_MS = 5000
-- A lease takes at most this fraction of what is left, and only with at least LEASE_MIN_MS left
-- in the current bucket of the key's shortest rate window: its slots are counted in that bucket
-- and the proxy uses them until 5 ms before it ends.
local LEASE_SHARE = 100
local LEASE_MIN_MS = 10
if redis.call('EXISTS', KEYS[6]) == 0 then return {2} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Sum of the buckets overlapping (now - window, now]; drops older ones. Also returns what a
-- refusal needs to tell when enough of them will have left the window (see wait_for).
local function window_sum(key, window)
  local width = window / BUCKETS
  local oldest = math.floor((now - window) / width)
  local fields = redis.call('HGETALL', key)
  local total, stale = 0, {}
  for i = 1, #fields, 2 do
    if tonumber(fields[i]) < oldest then
      stale[#stale + 1] = fields[i]
    else
      total = total + tonumber(fields[i + 1])
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return total, {fields = fields, oldest = oldest}, width
end

-- How long until the window sum has dropped by at least `excess`. The live buckets are put in
-- age order here, for refusals only: doing it on every call took a third of an admission.
local function wait_for(buckets, width, window, excess)
  local live, fields = {}, buckets.fields
  for i = 1, #fields, 2 do
    local bucket = tonumber(fields[i])
    if bucket >= buckets.oldest then live[#live + 1] = {bucket, tonumber(fields[i + 1])} end
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
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
    local wait = wait_for(rate_live, rate_width, rate_window, requests - rate_limit + 1)
    return {0, 'rate', wait, rate_limit, rate_window}
  end
end

-- Lapses a holder's dead reservations, then checks its cost limits: nil and the refusal, or
-- true and the lifetime and windowed budget committed with this call (-1: no such limit).
local function check_cost(k, lifetime_limit, window_limit, cost_window, amount, prefix)
  local reserved = 0
  if lifetime_limit > 0 or window_limit > 0 then
    -- Reservations of replicas that died lapse here rather than holding budget for ever.
    -- Any number of them is expired over a few calls, LAPSE_STEP at a time.
    local lapsed = redis.call('ZRANGEBYSCORE', k.res, '-inf', now, 'LIMIT', 0, LAPSE_STEP)
    if #lapsed > 0 then
      local amounts = redis.call('HMGET', k.resamt, unpack(lapsed))
      local released = 0
      for _, value in ipairs(amounts) do released = released + (tonumber(value) or 0) end
      redis.call('ZREM', k.res, unpack(lapsed))
      redis.call('HDEL', k.resamt, unpack(lapsed))
      redis.call('HINCRBY', k.resamt, 'total', -released)
    end
    reserved = tonumber(redis.call('HGET', k.resamt, 'total') or '0')
  end

  local function reserved_wait()
    local earliest = redis.call('ZRANGE', k.res, 0, 0, 'WITHSCORES')
    local wait = RESERVED_WAIT_MS
    if #earliest == 2 then wait = math.min(wait, tonumber(earliest[2]) - now) end
    return math.max(1000, wait)
  end

  -- A limit spend alone has reached is reported before one that reservations hold.
  local lifetime_spent, window_spent = 0, 0
  if lifetime_limit > 0 then
    lifetime_spent = tonumber(redis.call('GET', k.spend) or '0')
    if lifetime_spent >= lifetime_limit then return nil, {0, prefix .. 'cost', -1} end
  end
  if window_limit > 0 then
    local live, width
    window_spent, live, width = window_sum(k.wspend, cost_window)
    if window_spent >= window_limit then
      local wait = wait_for(live, width, cost_window, window_spent - window_limit + 1)
      return nil, {0, prefix .. 'window', wait}
    end
  end
  local lifetime_committed, window_committed = -1, -1
  if lifetime_limit > 0 then
    if lifetime_spent + reserved >= lifetime_limit then
      return nil, {0, prefix .. 'cost_reserved', reserved_wait()}
    end
    lifetime_committed = lifetime_spent + reserved + amount
  end
  if window_limit > 0 then
    if window_spent + reserved >= window_limit then
      return nil, {0, prefix .. 'window_reserved', reserved_wait()}
    end
    window_committed = window_spent + reserved + amount
  end
  return true, lifetime_committed, window_committed
end

local function reserve(k, amount_arg)
  redis.call('ZADD', k.res, now + reservation_ms, reservation)
  redis.call('HSET', k.resamt, reservation, amount_arg)
  redis.call('HINCRBY', k.resamt, 'total', amount_arg)
  redis.call('PEXPIRE', k.res, reservation_ms)
  redis.call('PEXPIRE', k.resamt, reservation_ms)
end

local function count_request(key, window, calls)
  local width = window / BUCKETS
  redis.call('HINCRBY', key, math.floor(now / width), calls)
  redis.call('PEXPIRE', key, window + math.ceil(width))
end

local extra = tonumber(ARGV[9] or '0')
local extra_counts = {}
for i = 1, extra do
  local limit, window = tonumber(ARGV[8 + 2 * i]), tonumber(ARGV[9 + 2 * i])
  local count, live, width = window_sum(KEYS[6 + i], window)
  if count >= limit then
    return {0, 'rate', wait_for(live, width, window, count - limit + 1), limit, window}
  end
  extra_counts[i] = count
end

local key_holder = {res = KEYS[4], resamt = KEYS[5], spend = KEYS[2], wspend = KEYS[3]}
local key_ok, lifetime_committed, window_committed = check_cost(
  key_holder, lifetime_limit, window_limit, cost_window, amount, '')
if not key_ok then return lifetime_committed end  -- the refusal

local user = tonumber(ARGV[10 + 2 * extra] or '0') == 1
local user_holder, user_rate, user_rate_window, user_lifetime, user_window
local user_requests, user_lifetime_committed, user_window_committed
if user then
  local u = 10 + 2 * extra
  user_rate, user_rate_window = tonumber(ARGV[u + 1]), tonumber(ARGV[u + 2])
  user_lifetime, user_window = tonumber(ARGV[u + 3]), tonumber(ARGV[u + 4])
  local k = 6 + extra
  user_holder = {rate = KEYS[k + 1], spend = KEYS[k + 2], wspend = KEYS[k + 3],
                 res = KEYS[k + 4], resamt = KEYS[k + 5]}
  if user_rate > 0 then
    local count, live, width = window_sum(user_holder.rate, user_rate_window)
    if count >= user_rate then
      local wait = wait_for(live, width, user_rate_window, count - user_rate + 1)
      return {0, 'user_rate', wait, user_rate, user_rate_window}
    end
    user_requests = count
  end
  local user_ok
  user_ok, user_lifetime_committed, user_window_committed = check_cost(
    user_holder, user_lifetime, user_window, tonumber(ARGV[u + 5]), amount, 'user_')
  if not user_ok then return user_lifetime_committed end  -- the refusal
end

-- The lease: what fits of the slots and budget asked for, or nothing.
local lease_at = 11 + 2 * extra + (user and 5 or 0)
local slots, lease_budget = tonumber(ARGV[lease_at] or '0'), 0
if slots > 0 then
  local shortest = nil
  local function fit(limit, counted, window)
    slots = math.min(slots, math.floor((limit - counted - 1) / LEASE_SHARE))
    if shortest == nil or window < shortest then shortest = window end
  end
  if rate_limit > 0 then fit(rate_limit, requests, rate_window) end
  for i = 1, extra do
    fit(tonumber(ARGV[8 + 2 * i]), extra_counts[i], tonumber(ARGV[9 + 2 * i]))
  end
  if user and user_rate > 0 then fit(user_rate, user_requests, user_rate_window) end
  if shortest ~= nil then
    local width = shortest / BUCKETS
    if (math.floor(now / width) + 1) * width - now < LEASE_MIN_MS then slots = 0 end
  end
  local left = math.huge
  if lifetime_limit > 0 then left = lifetime_limit - lifetime_committed end
  if window_limit > 0 then left = math.min(left, window_limit - window_committed) end
  if user then
    if user_lifetime > 0 then left = math.min(left, user_lifetime - user_lifetime_committed) end
    if user_window > 0 then left = math.min(left, user_window - user_window_committed) end
  end
  if left < math.huge then
    lease_budget = math.min(tonumber(ARGV[lease_at + 1]), math.floor(left / LEASE_SHARE))
    if amount > 0 then slots = math.min(slots, math.floor(lease_budget / amount)) end
  end
  if slots <= 0 then slots, lease_budget = 0, 0 end
end

-- Every limit holds: from here on the call (and its lease) is counted and its reservations made.
if rate_limit > 0 then count_request(KEYS[1], rate_window, 1 + slots) end
for i = 1, extra do count_request(KEYS[6 + i], tonumber(ARGV[9 + 2 * i]), 1 + slots) end
local held = amount + lease_budget
if (lifetime_limit > 0 or window_limit > 0) and held > 0 then reserve(key_holder, held) end
if user then
  if user_rate > 0 then count_request(user_holder.rate, user_rate_window, 1 + slots) end
  if (user_lifetime > 0 or user_window > 0) and held > 0 then reserve(user_holder, held) end
end
local left = -1
if rate_limit > 0 then left = rate_limit - requests - 1 - slots end
if lifetime_committed >= 0 then lifetime_committed = lifetime_committed + lease_budget end
if window_committed >= 0 then window_committed = window_committed + lease_budget end
return {1, left, lifetime_committed, window_committed, now, slots, lease_budget}

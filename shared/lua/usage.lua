-- Read a key's usage for reporting, without changing it.
-- KEYS: 1 lifetime spend, 2 windowed spend buckets, 3 rate buckets
-- ARGV: 1 cost window ms (0: none), 2 rate window ms (0: none)
-- Returns {lifetime spend, spend in the current cost window, requests in the current rate window}.
local BUCKETS = 60
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function window_sum(key, window)
  if window <= 0 then return 0 end
  local oldest = math.floor((now - window) / (window / BUCKETS))
  local fields = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #fields, 2 do
    if tonumber(fields[i]) >= oldest then total = total + tonumber(fields[i + 1]) end
  end
  return total
end

return {
  tonumber(redis.call('GET', KEYS[1]) or '0'),
  window_sum(KEYS[2], tonumber(ARGV[1])),
  window_sum(KEYS[3], tonumber(ARGV[2])),
}

-- Add faded counts to one sorted set that has an epoch of its own (recengine/scripts.py,
-- FadedCounts; ranking.py explains the arithmetic): each value, given at the reference time
-- ARGV[1], is added as value × 2^((reference − epoch)/h). When that exponent passes the limit,
-- every score is scaled down and the epoch moves to the reference time first, so sums stay far
-- from overflow. Then the set keeps its `keep` best members (0: all) and both keys expire after
-- `ttl` (0: never). Everything is checked before the first write: Redis does not roll a script
-- back.
-- KEYS: the sorted set, its epoch (one slot).
-- ARGV: reference time, half-life, rebase limit (half-lives), keep, ttl, and the values as one
-- JSON array of [member, value] pairs (one argument, however many members: cheap to send).
local reference, half_life, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keep, ttl, pairs_json = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local function num(n) return string.format('%.17g', n) end
local ok, values = pcall(cjson.decode, pairs_json)
if not ok or type(values) ~= 'table' then
  return redis.error_reply('BADCOUNT the counts are not a JSON array of [member, value] pairs')
end
for _, pair in ipairs(values) do
  local member, value = pair[1], pair[2]
  if type(member) ~= 'string' or type(value) ~= 'number' or value ~= value or value == math.huge or value <= 0 then
    return redis.error_reply('BADCOUNT count for ' .. tostring(member) .. ' is not a positive number')
  end
end
local epoch = tonumber(redis.call('GET', KEYS[2]))
if epoch == nil then
  epoch = reference
  redis.call('SET', KEYS[2], num(reference))
end
local exponent = (reference - epoch) / half_life
if exponent > limit then
  local scale = 0.5 ^ exponent
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    redis.call('ZADD', KEYS[1], num(tonumber(members[i + 1]) * scale), members[i])
  end
  redis.call('SET', KEYS[2], num(reference))
  exponent = 0
end
local factor = 2 ^ exponent
for _, pair in ipairs(values) do
  local added = pair[2] * factor
  if added > 0 then redis.call('ZINCRBY', KEYS[1], num(added), pair[1]) end
end
if keep > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1)) end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return #values

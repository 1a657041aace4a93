-- Add faded counts to sorted sets that each have an epoch of their own (recengine/scripts.py,
-- FadedCounts; ranking.py explains the arithmetic): each value, given at the reference time
-- ARGV[1], is added as value × 2^((reference − epoch)/h). When that exponent passes the limit,
-- every score of the set is scaled down and its epoch moves to the reference time first, so sums
-- stay far from overflow. Then each set keeps its `keep` best members (0: all) and its two keys
-- expire after `ttl` (0: never). Several sets go in one call when the caller's store lets their
-- keys share a script (one Redis; one slot of a cluster): a click's pairs cost one call, not one
-- per product. Everything is checked before the first write: Redis does not roll a script back.
-- KEYS: set 1, its epoch, set 2, its epoch, ...
-- ARGV: reference time, half-life, rebase limit (half-lives), keep, ttl, and the values as one
-- JSON array with one array of [member, value] pairs per set, in KEYS' order (one argument,
-- however many members: cheap to send).
local reference, half_life, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keep, ttl, sets_json = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local function num(n) return string.format('%.17g', n) end
local ok, sets = pcall(cjson.decode, sets_json)
if not ok or type(sets) ~= 'table' or #sets * 2 ~= #KEYS then
  return redis.error_reply('BADCOUNT the counts are not a JSON array of one [[member, value], ...] per set')
end
for _, values in ipairs(sets) do
  if type(values) ~= 'table' then
    return redis.error_reply('BADCOUNT a set\'s counts are not an array of [member, value] pairs')
  end
  for _, pair in ipairs(values) do
    local member, value = type(pair) == 'table' and pair[1], type(pair) == 'table' and pair[2]
    if type(member) ~= 'string' or type(value) ~= 'number' or value ~= value or value == math.huge or value <= 0 then
      return redis.error_reply('BADCOUNT count for ' .. tostring(member) .. ' is not a positive number')
    end
  end
end

local function add(set_key, epoch_key, values)
  local epoch = tonumber(redis.call('GET', epoch_key))
  if epoch == nil then
    epoch = reference
    redis.call('SET', epoch_key, num(reference))
  end
  local exponent = (reference - epoch) / half_life
  if exponent > limit then
    local scale = 0.5 ^ exponent
    local members = redis.call('ZRANGE', set_key, 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      redis.call('ZADD', set_key, num(tonumber(members[i + 1]) * scale), members[i])
    end
    redis.call('SET', epoch_key, num(reference))
    exponent = 0
  end
  local factor = 2 ^ exponent
  for _, pair in ipairs(values) do
    local added = pair[2] * factor
    if added > 0 then redis.call('ZINCRBY', set_key, num(added), pair[1]) end
  end
  if keep > 0 then redis.call('ZREMRANGEBYRANK', set_key, 0, -(keep + 1)) end
  if ttl > 0 then
    redis.call('EXPIRE', set_key, ttl)
    redis.call('EXPIRE', epoch_key, ttl)
  end
  return #values
end

local added = 0
for i, values in ipairs(sets) do
  added = added + add(KEYS[2 * i - 1], KEYS[2 * i], values)
end
return added

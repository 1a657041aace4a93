-- One click's share of a product's time-decayed popularity (see recengine/scripts.py, PopularityClick).
-- KEYS: popularity zset, epoch key (one slot). ARGV: product id, now, half-life, rebase limit.
local now, half_life, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = tonumber(redis.call('GET', KEYS[2]))
if epoch == nil then
  epoch = now
  redis.call('SET', KEYS[2], string.format('%.17g', now))
end
local exponent = (now - epoch) / half_life
if exponent > limit then
  local scale = 0.5 ^ exponent
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    redis.call('ZADD', KEYS[1], string.format('%.17g', tonumber(members[i + 1]) * scale), members[i])
  end
  redis.call('SET', KEYS[2], string.format('%.17g', now))
  exponent = 0
end
return redis.call('ZINCRBY', KEYS[1], string.format('%.17g', 2 ^ exponent), ARGV[1])

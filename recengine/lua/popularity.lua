-- One click's share of a product's time-decayed popularity, counted at most once per user,
-- product and window (see recengine/scripts.py, PopularityClick).
-- KEYS: popularity zset, epoch key, the clicking user's counted set (one slot: the popularity's).
-- ARGV: product id, now, half-life, rebase limit, window in seconds.
-- Reply: the product's new sum, or false when this user's click on it was already counted in
-- the window (the set of products it counted expires `window` seconds after its first).
local now, half_life, limit, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return false end
if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], math.ceil(window)) end
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

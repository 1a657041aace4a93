-- Replace one product's vector only if the product still exists (see recengine/scripts.py, RefreshEmbedding).
-- KEYS: the product hash. ARGV: vector field, vector bytes.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOPRODUCT no such product')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1

-- The user's recent events, for pairing (recengine/scripts.py, WindowPush): return the window as it was (newest first), then
-- remember the new event in front, keep the newest `kept`, and refresh the key's expiry.
-- Atomic, so two events of one user never both miss each other or both count one pair.
-- KEYS[1]: the user's window list (in the user's slot). ARGV: entry, kept, ttl seconds (0: none).
local kept, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local previous = redis.call('LRANGE', KEYS[1], 0, kept - 1)
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, kept - 1)
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return previous

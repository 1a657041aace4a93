-- Write a product's fields, only those whose stored value differs: RediSearch re-indexes the
-- whole hash, its vector included, on any HSET, even of an unchanged value (bench/catalog_updates.py
-- measured 4.8 ms of Redis' main thread per write at 100k products, against 53 µs for a hash
-- outside the index), so a write that changes nothing must not reach the hash at all.
--
-- KEYS[1]: the product hash.
-- ARGV[1]: 'upsert' (creates the product if it is missing) or 'update' (never creates it: an
--          error reply NOPRODUCT instead).
-- ARGV[2]: n, how many field names follow to delete (an extra field the product no longer has).
-- ARGV[3 .. 2+n]: those names. Then field, value pairs to write.
-- Returns {created (1 or 0), the names of the fields written or deleted...}.
local mode, n = ARGV[1], tonumber(ARGV[2])
local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'update' and not exists then
  return redis.error_reply('NOPRODUCT no such product')
end

local changed, writes, deletes = {}, {}, {}
for i = 3, 2 + n do
  if exists and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    table.insert(deletes, ARGV[i]); table.insert(changed, ARGV[i])
  end
end
local first = 3 + n
if #ARGV >= first then
  local names = {}
  for i = first, #ARGV, 2 do table.insert(names, ARGV[i]) end
  local stored = exists and redis.call('HMGET', KEYS[1], unpack(names)) or {}
  for j, name in ipairs(names) do
    local value = ARGV[first + 2 * (j - 1) + 1]
    if stored[j] ~= value then
      table.insert(writes, name); table.insert(writes, value); table.insert(changed, name)
    end
  end
end

if #deletes > 0 then redis.call('HDEL', KEYS[1], unpack(deletes)) end
if #writes > 0 then redis.call('HSET', KEYS[1], unpack(writes)) end
local reply = {exists and 0 or 1}
for _, name in ipairs(changed) do table.insert(reply, name) end
return reply

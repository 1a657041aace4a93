-- One click or dismissal of one user, applied atomically (see recengine/scripts.py, UserEvent).
-- KEYS: features hash, recent clicks list, seen zset, dismissed set (one slot).
-- ARGV: bound in order by UserEvent.argv().
local features, recent, seen, dismissed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, product_id, category, blob = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local alpha, step, dim, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local vector_half_life, affinity_half_life = tonumber(ARGV[9]), tonumber(ARGV[10])
local seen_kept, recent_kept, ttl = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local vec_field, vec_at_field, aff_at_field = ARGV[14], ARGV[15], ARGV[16]
local aff_prefix, clicks_field, last_id_field, last_cat_field = ARGV[17], ARGV[18], ARGV[19], ARGV[20]

local function finite(raw)
  local n = tonumber(raw)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
local function faded(since, half_life)
  local t = finite(since)
  if t == nil or now <= t then return 1 end
  return 0.5 ^ ((now - t) / half_life)
end
local function num(n) return string.format('%.17g', n) end

local stored = {}
local flat = redis.call('HGETALL', features)
for i = 1, #flat, 2 do stored[flat[i]] = flat[i + 1] end

local repaired = 0
local writes = {}
local aff_fade = faded(stored[aff_at_field], affinity_half_life)
local aff_field = aff_prefix .. category
local affinity = 0
for name, raw in pairs(stored) do
  if string.sub(name, 1, #aff_prefix) == aff_prefix then
    local value = finite(raw)
    if value == nil then repaired = 1; value = 0 end
    value = value * aff_fade
    if name == aff_field then affinity = value else
      table.insert(writes, name); table.insert(writes, num(value))
    end
  end
end
affinity = affinity + step
table.insert(writes, aff_field); table.insert(writes, num(affinity))
table.insert(writes, aff_at_field); table.insert(writes, num(now))

local clicks = finite(stored[clicks_field])
if stored[clicks_field] and not clicks then repaired = 1 end
clicks = math.floor(clicks or 0)
if mode == 'click' then
  clicks = clicks + 1
  table.insert(writes, clicks_field); table.insert(writes, clicks)
  table.insert(writes, last_id_field); table.insert(writes, product_id)
  table.insert(writes, last_cat_field); table.insert(writes, category)
end

local updated = 0
if #blob == dim * 4 then
  local fmt = '<' .. string.rep('f', dim)
  local v = {struct.unpack(fmt, blob)}
  local previous = stored[vec_field]
  local norm = 0
  if previous and #previous == dim * 4 then
    local p = {struct.unpack(fmt, previous)}
    local keep = (1 - alpha) * faded(stored[vec_at_field], vector_half_life)
    for i = 1, dim do
      local x = alpha * v[i] + keep * p[i]
      v[i] = x
      norm = norm + x * x
    end
  else
    for i = 1, dim do norm = norm + v[i] * v[i] end
  end
  norm = math.sqrt(norm)
  if norm > 0 and norm == norm and norm ~= math.huge then
    local scale = 1 / norm
    for i = 1, dim do v[i] = v[i] * scale end
    table.insert(writes, vec_field); table.insert(writes, struct.pack(fmt, unpack(v, 1, dim)))
    table.insert(writes, vec_at_field); table.insert(writes, num(now))
    updated = 1
  end
end

redis.call('HSET', features, unpack(writes))
if mode == 'click' then
  redis.call('LPUSH', recent, product_id)
  redis.call('LTRIM', recent, 0, recent_kept - 1)
else
  redis.call('SADD', dismissed, product_id)
end
redis.call('ZADD', seen, now, product_id)
redis.call('ZREMRANGEBYRANK', seen, 0, -(seen_kept + 1))
if ttl > 0 then
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
end
return {num(affinity), clicks, updated, repaired}

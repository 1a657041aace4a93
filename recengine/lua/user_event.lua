-- One click or dismissal of one user, applied atomically and at most once per event id
-- (see recengine/scripts.py, UserEvent).
--
-- Everything of a user lives in ONE hash, KEYS[1], so that a memory cap evicts a user whole or
-- not at all: the running vectors, affinities and counters, and, as fields holding product ids
-- one per line (a product id never holds a line break), the recent clicks (newest first, with
-- repeats), what was seen (clicked or dismissed, newest first, no repeats), what was dismissed,
-- and the ids of the user's last events (the idempotency window); and the user's recent typed
-- events for co-occurrence (the window: encoded entries, newest first, co_occurrence_rules.py).
--
-- KEYS[2..4]: the recent list, seen zset and dismissed set of the layout before one key per
-- user (same slot): folded into the hash on the user's first event since, then deleted.
-- ARGV: bound in order by UserEvent.argv().
--
-- Reply: {affinity of the category after the event, clicks, vector moved (0/1), a junk
-- counter restarted (0/1), already applied (0/1)}. An event id already in the window changes
-- nothing and answers the user's current affinity and clicks with "already applied" 1.
local user = KEYS[1]
local mode, product_id, category, blob = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local alpha, step, dim, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local vector_half_life, affinity_half_life = tonumber(ARGV[9]), tonumber(ARGV[10])
local seen_kept, recent_kept, ttl = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local vec_field, vec_at_field, aff_at_field = ARGV[14], ARGV[15], ARGV[16]
local aff_prefix, clicks_field, last_id_field, last_cat_field = ARGV[17], ARGV[18], ARGV[19], ARGV[20]
local recent_field, seen_field, dismissed_field, events_field = ARGV[21], ARGV[22], ARGV[23], ARGV[24]
local event_id, events_kept = ARGV[25], tonumber(ARGV[26])
local window_field, window_entry, window_kept = ARGV[27], ARGV[28], tonumber(ARGV[29])

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
local function has_line(raw, line)
  return raw ~= nil and string.find('\n' .. raw .. '\n', '\n' .. line .. '\n', 1, true) ~= nil
end
-- `first`, then the lines of `raw` (without `first`'s, when `unique`), `limit` lines at most.
-- On the string, never split into a table: a user's seen list holds hundreds of ids, and
-- splitting and joining it on every event cost more than the rest of the event together.
local function in_front(first, raw, limit, unique)
  local rest = raw or ''
  if unique and rest ~= '' then
    local padded = '\n' .. rest .. '\n'
    local s, e = string.find(padded, '\n' .. first .. '\n', 1, true)
    if s then
      local before, after = string.sub(padded, 2, s - 1), string.sub(padded, e + 1, -2)
      rest = before .. ((before ~= '' and after ~= '') and '\n' or '') .. after
    end
  end
  local out = rest == '' and first or first .. '\n' .. rest
  local pos = 0
  for _ = 1, math.max(limit, 1) do
    pos = string.find(out, '\n', pos + 1, true)
    if not pos then return out end
  end
  return string.sub(out, 1, pos - 1)
end
-- `raw` and the ids of `list` after it, one per line.
local function appended(raw, list)
  if #list == 0 then return raw end
  local extra = table.concat(list, '\n')
  if raw == nil or raw == '' then return extra end
  return raw .. '\n' .. extra
end

local stored = {}
local flat = redis.call('HGETALL', user)
for i = 1, #flat, 2 do stored[flat[i]] = flat[i + 1] end

local aff_fade = faded(stored[aff_at_field], affinity_half_life)
local aff_field = aff_prefix .. category
local clicks = finite(stored[clicks_field])

if event_id ~= '' and has_line(stored[events_field], event_id) then
  return {num((finite(stored[aff_field]) or 0) * aff_fade), math.floor(clicks or 0), 0, 0, 1}
end

-- The layout before one key per user, folded in once.
local recent, seen, dismissed = stored[recent_field], stored[seen_field], stored[dismissed_field]
if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4]) > 0 then
  recent = appended(recent, redis.call('LRANGE', KEYS[2], 0, recent_kept - 1))
  seen = appended(seen, redis.call('ZREVRANGE', KEYS[3], 0, seen_kept - 1))
  dismissed = appended(dismissed, redis.call('SMEMBERS', KEYS[4]))
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end

local repaired = 0
local writes = {}
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

if stored[clicks_field] and not clicks then repaired = 1 end
clicks = math.floor(clicks or 0)
if mode == 'click' then
  clicks = clicks + 1
  table.insert(writes, clicks_field); table.insert(writes, clicks)
  table.insert(writes, last_id_field); table.insert(writes, product_id)
  table.insert(writes, last_cat_field); table.insert(writes, category)
  table.insert(writes, recent_field); table.insert(writes, in_front(product_id, recent, recent_kept, false))
else
  if not has_line(dismissed, product_id) then dismissed = appended(dismissed, {product_id}) end
end
if dismissed ~= nil and dismissed ~= '' then
  table.insert(writes, dismissed_field); table.insert(writes, dismissed)
end
table.insert(writes, seen_field); table.insert(writes, in_front(product_id, seen, seen_kept, true))
if event_id ~= '' then
  table.insert(writes, events_field)
  table.insert(writes, in_front(event_id, stored[events_field], events_kept, true))
end
if window_entry ~= '' then
  table.insert(writes, window_field)
  table.insert(writes, in_front(window_entry, stored[window_field], window_kept, false))
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

redis.call('HSET', user, unpack(writes))
if ttl > 0 then redis.call('EXPIRE', user, ttl) end
return {num(affinity), clicks, updated, repaired, 0}

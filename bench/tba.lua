-- wrk script: a TBA-signed SuiteTalk `get` with a FRESH nonce and timestamp on every request.
--
-- wrk's LuaJIT has no HMAC, so SHA-256, HMAC-SHA256 and base64 are implemented here with the
-- `bit` library (about 4 SHA-256 blocks per request: the key's inner/outer pads are hashed once
-- per thread). Signature as in SPEC section 3: base string
-- `account&consumerKey&token&nonce&timestamp`, key `consumerSecret&tokenSecret`, base64.
--
-- Environment: NS_ACCOUNT NS_CK NS_CS NS_TK NS_TS NS_VER (e.g. 2024_2), RUN_ID (hex, distinct
-- per run, part of every nonce), SOAP_ACTION (default `get`), TBA_CHECK_FILE (optional: write a
-- signature and body over a fixed nonce/timestamp there, for bench/run.py to compare with Python's hmac).

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit = bit.rshift, bit.lshift, bit.ror, bit.tobit
local byte, char, concat = string.byte, string.char, table.concat

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for i = 1, 64 do K[i] = tobit(K[i]) end
local H0 = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
for i = 1, 8 do H0[i] = tobit(H0[i]) end

local W = {}

-- One 64-byte block of `s` starting at byte `pos` into state H (in place).
local function compress(H, s, pos)
  for j = 1, 16 do
    local b1, b2, b3, b4 = byte(s, pos, pos + 3)
    W[j] = bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
    pos = pos + 4
  end
  for j = 17, 64 do
    local x, y = W[j - 15], W[j - 2]
    local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
    local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
    W[j] = tobit(W[j - 16] + s0 + W[j - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for j = 1, 64 do
    local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = h + S1 + ch + K[j] + W[j]
    local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + S0 + maj)
  end
  H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
  H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

local function be32(x)
  return char(band(rshift(x, 24), 255), band(rshift(x, 16), 255), band(rshift(x, 8), 255), band(x, 255))
end

-- SHA-256 of `msg`, continuing from `state` after `prefix_len` bytes already compressed.
local function sha256_from(state, prefix_len, msg)
  local H = { state[1], state[2], state[3], state[4], state[5], state[6], state[7], state[8] }
  local total = prefix_len + #msg
  local pad = (55 - total) % 64
  msg = msg .. "\128" .. string.rep("\0", pad) .. be32(0) .. be32(total * 8)
  for pos = 1, #msg, 64 do compress(H, msg, pos) end
  local out = {}
  for i = 1, 8 do out[i] = be32(H[i]) end
  return concat(out)
end

local function sha256(msg) return sha256_from(H0, 0, msg) end

local function xor_pad(key, v)
  local out = {}
  for i = 1, 64 do out[i] = char(bxor(byte(key, i) or 0, v)) end
  return concat(out)
end

-- A signer for one key: the key's pad blocks are compressed once.
local function hmac_sha256_signer(key)
  if #key > 64 then key = sha256(key) end
  local inner = { unpack(H0) }
  compress(inner, xor_pad(key, 0x36), 1)
  local outer = { unpack(H0) }
  compress(outer, xor_pad(key, 0x5c), 1)
  return function(msg)
    return sha256_from(outer, 64, sha256_from(inner, 64, msg))
  end
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64T = {}
for i = 1, 64 do B64T[i - 1] = B64:sub(i, i) end

local function base64(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = lshift(a, 16) + lshift(b or 0, 8) + (c or 0)
    out[#out + 1] = B64T[band(rshift(v, 18), 63)] .. B64T[band(rshift(v, 12), 63)]
      .. (b and B64T[band(rshift(v, 6), 63)] or "=") .. (c and B64T[band(v, 63)] or "=")
  end
  return concat(out)
end

local function hex(s)
  return (s:gsub(".", function(ch) return string.format("%02x", byte(ch)) end))
end

-- ---------------------------------------------------------------------------------------------

local ACCOUNT = os.getenv("NS_ACCOUNT") or "1234567"
local CK = os.getenv("NS_CK") or string.rep("ck", 32)
local CS = os.getenv("NS_CS") or string.rep("cs", 32)
local TK = os.getenv("NS_TK") or string.rep("tk", 32)
local TS = os.getenv("NS_TS") or string.rep("ts", 32)
local VER = os.getenv("NS_VER") or "2024_2"
local RUN_ID = os.getenv("RUN_ID") or string.format("%x", os.time())
local ACTION = os.getenv("SOAP_ACTION") or "get"

local sign = hmac_sha256_signer(CS .. "&" .. TS)
local MSG = "urn:messages_" .. VER .. ".platform.webservices.netsuite.com"
local CORE = "urn:core_" .. VER .. ".platform.webservices.netsuite.com"

local function signature(nonce, ts)
  return base64(sign(ACCOUNT .. "&" .. CK .. "&" .. TK .. "&" .. nonce .. "&" .. ts))
end

local HEAD = '<?xml version="1.0" encoding="utf-8"?>'
  .. '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
  .. 'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
  .. '<soapenv:Header><tokenPassport xmlns="' .. MSG .. '">'
  .. '<account xmlns="' .. CORE .. '">' .. ACCOUNT .. '</account>'
  .. '<consumerKey xmlns="' .. CORE .. '">' .. CK .. '</consumerKey>'
  .. '<token xmlns="' .. CORE .. '">' .. TK .. '</token>'
  .. '<nonce xmlns="' .. CORE .. '">'
local TAIL = '</tokenPassport></soapenv:Header><soapenv:Body>'
  .. '<get xmlns="' .. MSG .. '"><baseRef xsi:type="ns1:RecordRef" type="customer" internalId="42" '
  .. 'xmlns:ns1="' .. CORE .. '"/></get></soapenv:Body></soapenv:Envelope>'

local function body(nonce, ts)
  return HEAD .. nonce .. '</nonce><timestamp xmlns="' .. CORE .. '">' .. ts .. '</timestamp>'
    .. '<signature algorithm="HMAC_SHA256" xmlns="' .. CORE .. '">' .. signature(nonce, ts)
    .. '</signature>' .. TAIL
end

-- wrk hooks ------------------------------------------------------------------------------------

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
end

local counter = 0
local headers

function init(args)
  headers = { ["Content-Type"] = "text/xml; charset=utf-8", ["SOAPAction"] = ACTION }
  local check = os.getenv("TBA_CHECK_FILE")
  if check and (thread_index or 1) == 1 then
    local f = assert(io.open(check, "w"))
    f:write(hex(sha256("abc")), "\n")
    f:write(hex(hmac_sha256_signer("Jefe")("what do ya want for nothing?")), "\n")
    f:write(signature("abcDEF123", "1700000000"), "\n")
    f:write(body("abcDEF123", "1700000000"), "\n")
    f:close()
  end
end

function request()
  counter = counter + 1
  -- Alphanumeric, 6-64 characters, unique per (run, thread, request): the gateway refuses replays.
  local nonce = string.format("%s%dx%x", RUN_ID, thread_index or 0, counter)
  return wrk.format("POST", nil, headers, body(nonce, tostring(os.time())))
end

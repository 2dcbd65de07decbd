// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012) with the 128-bit
// result of its reference implementation (github.com/veorq/SipHash): a keyed hash for which,
// without the key, nobody can find two inputs with the same result other than by luck. The dedup
// window keeps this hash of an id instead of the id: 16 bytes for ids of up to 128 characters (512
// bytes), and a collision (a new message taken for a duplicate) has a chance of about
// n^2 / 2^129 among n ids even when the ids are chosen by someone trying, as long as the key is
// secret and random (random_sip_key).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace mq::detail {

struct SipKey {
  std::uint64_t k0 = 0, k1 = 0;
};

struct Hash128 {
  std::uint64_t low = 0, high = 0;  // the first and last 8 bytes of the result, little-endian
  friend bool operator==(const Hash128&, const Hash128&) = default;
};

// 16 bytes from the operating system's random source (getrandom, else /dev/urandom); throws
// std::system_error if it has none.
SipKey random_sip_key();

namespace siphash_detail {

struct State {
  std::uint64_t v0, v1, v2, v3;
  void round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  void compress(std::uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  std::uint64_t finish_half() {
    for (int i = 0; i < 4; ++i) round();
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

inline std::uint64_t load_le64(const char* p) {
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap64(word);
  return word;
}

}  // namespace siphash_detail

inline Hash128 siphash_2_4_128(std::string_view data, const SipKey& key) {
  siphash_detail::State s{0x736f6d6570736575ULL ^ key.k0, 0x646f72616e646f6dULL ^ key.k1 ^ 0xee,
                          0x6c7967656e657261ULL ^ key.k0, 0x7465646279746573ULL ^ key.k1};
  const char* p = data.data();
  const std::size_t whole = data.size() / 8 * 8;
  for (std::size_t i = 0; i < whole; i += 8) s.compress(siphash_detail::load_le64(p + i));
  std::uint64_t last = static_cast<std::uint64_t>(data.size()) << 56;
  for (std::size_t i = whole; i < data.size(); ++i)
    last |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * (i - whole));
  s.compress(last);
  s.v2 ^= 0xee;
  Hash128 out;
  out.low = s.finish_half();
  s.v1 ^= 0xdd;
  out.high = s.finish_half();
  return out;
}

}  // namespace mq::detail

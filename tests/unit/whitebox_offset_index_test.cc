// The sparse offset index beside each log (an internal part, libmq/docs/log_format.md "The index"):
// its byte format, the checks that make a damaged index be rebuilt, and the floor lookup of reads.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "storage/offset_index.h"

using mq::detail::decode_index;
using mq::detail::encode_index_entry;
using mq::detail::encode_index_header;
using mq::detail::floor_entry;
using mq::detail::IndexEntry;
using mq::detail::kIndexEntryBytes;
using mq::detail::kIndexMagic;
using mq::detail::kNoTimestamp;
using mq::detail::time_floor_entry;

namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

std::string encode(const std::vector<IndexEntry>& entries) {
  std::string out;
  encode_index_header(out);
  for (const auto& e : entries) encode_index_entry(out, e);
  return out;
}

bool same(const std::vector<IndexEntry>& a, const std::vector<IndexEntry>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].offset != b[i].offset || a[i].position != b[i].position || a[i].timestamp != b[i].timestamp) {
      return false;
    }
  }
  return true;
}

std::uint64_t little_endian_at(const std::string& bytes, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i)
    v |= std::uint64_t{static_cast<unsigned char>(bytes[at + i])} << (8 * i);
  return v;
}

// The last entry with offset <= `offset` by a plain scan ({0, 0} when none).
IndexEntry floor_by_scan(const std::vector<IndexEntry>& entries, std::uint64_t offset) {
  IndexEntry found;
  for (const auto& e : entries)
    if (e.offset <= offset) found = e;
  return found;
}

const std::vector<IndexEntry> kEntries = {{10, 4096}, {25, 8300}, {26, 12500}, {1000, 1u << 20}};

}  // namespace

TEST_CASE("The index file is the 8 magic bytes, then 32 little-endian bytes per entry") {
  std::string header;
  encode_index_header(header);
  CHECK(header == "mqidx02\n");
  CHECK(kIndexEntryBytes == 32);
  CHECK(header.size() == 8);
  CHECK(kIndexMagic.size() == 8);

  std::string out = "before";
  encode_index_entry(out, {0x0102030405060708ull, 0x1112131415161718ull, -2});
  REQUIRE(out.size() == 6 + kIndexEntryBytes);
  CHECK(out.substr(0, 6) == "before");  // appended, not replaced
  CHECK(little_endian_at(out, 6) == 0x0102030405060708ull);
  CHECK(little_endian_at(out, 14) == 0x1112131415161718ull);
  CHECK(little_endian_at(out, 22) == 0xfffffffffffffffeull);  // the timestamp, two's complement
  CHECK(static_cast<unsigned char>(out[6]) == 0x08);          // least significant byte first
  CHECK(static_cast<unsigned char>(out[13]) == 0x01);

  // The check differs between entries, so that it is worth something.
  std::string a;
  std::string b;
  std::string c;
  encode_index_entry(a, {1, 100, 5});
  encode_index_entry(b, {2, 100, 5});
  encode_index_entry(c, {1, 100, 6});
  CHECK(a.substr(24) != b.substr(24));
  CHECK(a.substr(24) != c.substr(24));
  CHECK(encode(kEntries).size() == 8 + kEntries.size() * kIndexEntryBytes);
}

TEST_CASE("Decoding gives back the entries that were encoded") {
  auto decoded = decode_index(encode(kEntries));
  REQUIRE(decoded.has_value());
  CHECK(same(*decoded, kEntries));

  // Only the magic: a valid index without entries ({0, 0} is implied, never stored).
  decoded = decode_index(encode({}));
  REQUIRE(decoded.has_value());
  CHECK(decoded->empty());

  // The largest values survive.
  const std::vector<IndexEntry> extreme = {
      {1, 1, kNoTimestamp}, {kMax - 1, kMax - 1, -1}, {kMax, kMax, std::numeric_limits<std::int64_t>::max()}};
  decoded = decode_index(encode(extreme));
  REQUIRE(decoded.has_value());
  CHECK(same(*decoded, extreme));

  // Entries need only increase, not by a fixed step.
  const std::vector<IndexEntry> one = {{1, 2}};
  decoded = decode_index(encode(one));
  REQUIRE(decoded.has_value());
  CHECK(same(*decoded, one));
}

TEST_CASE("An index without the right magic is refused") {
  // mqidx01 is the format before the time index: such an index is rebuilt.
  for (const std::string bytes :
       {"", "m", "mqidx02", "mqidx01\n", "mqidx03\n", "MQIDX02\n", "mqidx02\r", "\nmqidx02"}) {
    CAPTURE(bytes);
    CHECK_FALSE(decode_index(bytes).has_value());
  }
  std::string zeroed = encode(kEntries);
  for (std::size_t i = 0; i < kIndexMagic.size(); ++i) zeroed[i] = '\0';
  CHECK_FALSE(decode_index(zeroed).has_value());
  // Entries before the magic are no index either.
  std::string shifted;
  encode_index_entry(shifted, {10, 4096});
  shifted += encode(kEntries);
  CHECK_FALSE(decode_index(shifted).has_value());
}

TEST_CASE("Any flipped bit of an entry, or an entry zeroed, makes the whole index be refused") {
  const std::string good = encode(kEntries);
  REQUIRE(decode_index(good).has_value());
  for (std::size_t byte = kIndexMagic.size(); byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = good;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      CAPTURE(byte);
      CAPTURE(bit);
      CHECK_FALSE(decode_index(damaged).has_value());
    }
  }
  for (std::size_t entry = 0; entry < kEntries.size(); ++entry) {
    std::string zeroed = good;
    zeroed.replace(kIndexMagic.size() + entry * kIndexEntryBytes, kIndexEntryBytes, kIndexEntryBytes, '\0');
    CAPTURE(entry);
    CHECK_FALSE(decode_index(zeroed).has_value());
  }
  // A 4 KiB block of zeros where entries were (one entry's bytes are 24, a block's 4096).
  std::string block = good;
  block.resize(kIndexMagic.size());
  block.append(4096, '\0');
  CHECK_FALSE(decode_index(block).has_value());
}

TEST_CASE("Entries must grow strictly in both offset and position") {
  const std::vector<std::vector<IndexEntry>> bad = {
      {{0, 0}},                // the implied first entry is never stored
      {{0, 100}},              // offset 0 is at byte 0
      {{5, 0}},                // so is nothing else
      {{10, 100}, {10, 200}},  // the same offset twice
      {{10, 100}, {9, 200}},   // offsets going back
      {{10, 100}, {20, 100}},  // the same position twice
      {{10, 100}, {20, 99}},   // positions going back
      {{10, 100}, {20, 200}, {20, 300}},
      {{10, 100}, {20, 200}, {15, 300}},
      {{kMax, kMax}, {1, 1}},
      {{10, 100, 7}, {20, 200, 6}},  // timestamps going back (the index keeps a running maximum)
  };
  for (const auto& entries : bad) {
    CAPTURE(entries.size());
    CAPTURE(entries.back().offset);
    CAPTURE(entries.back().position);
    CHECK_FALSE(decode_index(encode(entries)).has_value());
  }
}

TEST_CASE("A partial entry at the end, a torn write, is ignored") {
  const std::string good = encode(kEntries);
  for (std::size_t cut = 1; cut < kIndexEntryBytes; ++cut) {
    CAPTURE(cut);
    // The last entry torn: the ones before it stand.
    auto decoded = decode_index(std::string_view(good).substr(0, good.size() - cut));
    REQUIRE(decoded.has_value());
    CHECK(same(*decoded, std::vector<IndexEntry>(kEntries.begin(), kEntries.end() - 1)));
    // A torn first entry: an index without entries.
    decoded = decode_index(std::string_view(good).substr(0, kIndexMagic.size() + kIndexEntryBytes - cut));
    REQUIRE(decoded.has_value());
    CHECK(decoded->empty());
    // Whatever the partial bytes hold.
    decoded = decode_index(good + std::string(kIndexEntryBytes - cut, '\xff'));
    REQUIRE(decoded.has_value());
    CHECK(same(*decoded, kEntries));
  }
}

TEST_CASE("floor_entry finds the last entry at or before an offset") {
  const std::vector<IndexEntry> entries = {{0, 0}, {10, 4096}, {25, 8300}, {26, 12500}};
  struct Case {
    std::uint64_t offset;
    IndexEntry expected;
  };
  const std::vector<Case> cases = {
      {0, {0, 0}},      {1, {0, 0}},      {9, {0, 0}},       {10, {10, 4096}},  {11, {10, 4096}},
      {24, {10, 4096}}, {25, {25, 8300}}, {26, {26, 12500}}, {27, {26, 12500}}, {kMax, {26, 12500}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.offset);
    const IndexEntry found = floor_entry(entries, c.offset);
    CHECK(found.offset == c.expected.offset);
    CHECK(found.position == c.expected.position);
  }
}

TEST_CASE("floor_entry starts at byte 0 when no entry is at or before the offset") {
  // An empty index, or entries as decode_index returns them (without the implied {0, 0}).
  for (std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{9}, kMax}) {
    const IndexEntry found = floor_entry({}, offset);
    CHECK(found.offset == 0);
    CHECK(found.position == 0);
  }
  auto decoded = decode_index(encode(kEntries));
  REQUIRE(decoded.has_value());
  for (std::uint64_t offset = 0; offset < 10; ++offset) {
    const IndexEntry found = floor_entry(*decoded, offset);
    CHECK(found.offset == 0);
    CHECK(found.position == 0);
  }
  CHECK(floor_entry(*decoded, 10).position == 4096);
  CHECK(floor_entry(*decoded, kMax).position == (1u << 20));
  // One entry.
  CHECK(floor_entry({{0, 0}}, kMax).position == 0);
  CHECK(floor_entry({{kMax, 7}}, kMax).position == 7);
  CHECK(floor_entry({{kMax, 7}}, kMax - 1).position == 0);
}

TEST_CASE("floor_entry agrees with a plain scan on random indexes") {
  std::mt19937_64 random(20240601);  // fixed seed: the same cases every run
  for (int round = 0; round < 100; ++round) {
    std::vector<IndexEntry> entries = {{0, 0}};
    const int count = static_cast<int>(random() % 40);
    for (int i = 0; i < count; ++i) {
      const IndexEntry& last = entries.back();
      entries.push_back({last.offset + 1 + random() % 50, last.position + 1 + random() % 5000});
    }
    // The same entries survive an encode and decode (without the implied first one).
    auto decoded = decode_index(encode(std::vector<IndexEntry>(entries.begin() + 1, entries.end())));
    REQUIRE(decoded.has_value());
    CHECK(same(*decoded, std::vector<IndexEntry>(entries.begin() + 1, entries.end())));
    const std::uint64_t end = entries.back().offset + 3;
    for (std::uint64_t offset = 0; offset <= end; ++offset) {
      const IndexEntry expected = floor_by_scan(entries, offset);
      const IndexEntry found = floor_entry(entries, offset);
      if (found.offset != expected.offset || found.position != expected.position) {
        CAPTURE(round);
        CAPTURE(offset);
        CHECK(found.offset == expected.offset);
        CHECK(found.position == expected.position);
      }
    }
  }
}

TEST_CASE("Entries with equal timestamps are an index, an old index without timestamps is not") {
  const std::vector<IndexEntry> flat = {{10, 100, 5}, {20, 200, 5}, {30, 300, 9}};
  auto decoded = decode_index(encode(flat));
  REQUIRE(decoded.has_value());
  CHECK(same(*decoded, flat));

  // An mqidx01 file: 24-byte entries (offset, position, check) — rebuilt, never misread.
  std::string old = "mqidx01\n";
  old.append(48, '\x01');
  CHECK_FALSE(decode_index(old).has_value());
}

TEST_CASE("time_floor_entry finds the last entry with only older messages before it") {
  // Entries: (offset, position, largest timestamp before the offset).
  const std::vector<IndexEntry> entries = {
      {0, 0, kNoTimestamp}, {10, 4096, 1000}, {20, 8192, 1000}, {30, 12288, 1500}, {40, 16384, 2000}};
  auto floor_offset = [&](std::int64_t t) { return time_floor_entry(entries, t).offset; };
  CHECK(floor_offset(kNoTimestamp) == 0);
  CHECK(floor_offset(-5) == 0);
  CHECK(floor_offset(1000) == 0);   // a message before offset 10 has 1000: it may be the first
  CHECK(floor_offset(1001) == 20);  // everything before 20 is at most 1000
  CHECK(floor_offset(1500) == 20);
  CHECK(floor_offset(1501) == 30);
  CHECK(floor_offset(2000) == 30);
  CHECK(floor_offset(2001) == 40);  // only the tail after the last entry can hold it
  CHECK(floor_offset(std::numeric_limits<std::int64_t>::max()) == 40);
  CHECK(time_floor_entry({}, 5).offset == 0);
}

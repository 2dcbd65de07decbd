// Key placement (Kafka's default partitioner) and topics over owned partitions.
#include <doctest/doctest.h>

#include "mq/mq.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;

TEST_CASE("Murmur2MatchesKafkasReferenceVectors") {
  // org.apache.kafka.common.utils.UtilsTest#testMurmur2
  CHECK(murmur2("21") == -973932308);
  CHECK(murmur2("foobar") == -790332482);
  CHECK(murmur2("a-little-bit-long-string") == -985981536);
  CHECK(murmur2("a-little-bit-longer-string") == -1486304829);
  CHECK(murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971);
  CHECK(murmur2("abc") == 479470107);
}

TEST_CASE("KeysMapLikeKafkasDefaultPartitioner") {
  // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
  CHECK(partition_for_key("foobar", 50) == 16);
  for (std::uint32_t n : {1u, 3u, 8u, 64u}) {
    for (const char* key : {"", "a", "user-42", "ключ"}) {
      CHECK(partition_for_key(key, n) == (static_cast<std::uint32_t>(murmur2(key)) & 0x7fffffff) % n);
    }
  }
}

TEST_CASE("TopicOpensOnlyTheOwnedPartitions") {
  TempDir dir;
  auto store = open_store(dir.path());
  auto topic = Topic::open(*store, {"events", 8}, {1, 3});
  REQUIRE(topic.ok());
  CHECK((*topic)->partition_count() == 8);
  CHECK((*topic)->owned_partitions() == std::vector<std::uint32_t>{1, 4, 7});
  CHECK((*topic)->partition(4) != nullptr);
  CHECK((*topic)->partition(0) == nullptr);
  CHECK((*topic)->partition(8) == nullptr);
  CHECK((*topic)->partition_for("foobar") == partition_for_key("foobar", 8));
  CHECK(*store->partitions_on_disk("events") == 8);  // partition-7.log exists
}

TEST_CASE("FewerPartitionsThanOnDiskIsRefused") {
  TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(Topic::open(*store, {"orders", 4}, {}).ok());
  CHECK(Topic::open(*store, {"orders", 6}, {}).ok());  // growing is fine
  auto shrunk = Topic::open(*store, {"orders", 2}, {});
  REQUIRE_FALSE(shrunk.ok());
  CHECK(shrunk.status().code() == ErrorCode::kInvalidArgument);
  CHECK(Topic::open(*store, {"../x", 1}, {}).status().code() == ErrorCode::kInvalidArgument);
  CHECK(Topic::open(*store, {"zero", 0}, {}).status().code() == ErrorCode::kInvalidArgument);
}

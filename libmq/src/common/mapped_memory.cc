#include "common/mapped_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <new>
#include <utility>

namespace mq::detail {

namespace {

std::size_t page_bytes() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

MappedMemory::MappedMemory(std::size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  // Rounded up below, with a huge page more: a size within that of the end of size_t would wrap
  // around to a small mapping.
  if (bytes > std::numeric_limits<std::size_t>::max() - 2 * kHugePageBytes) throw std::bad_alloc();
  const bool huge = bytes >= kHugePageBytes;
  const std::size_t wanted = round_up(bytes, huge ? kHugePageBytes : page_bytes());
  // A huge page needs a 2 MiB-aligned range: map one huge page more and give back what lies
  // outside the aligned part.
  const std::size_t mapped = huge ? wanted + kHugePageBytes : wanted;
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  data_ = raw;
  mapped_bytes_ = wanted;
  if (huge) {
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const std::uintptr_t aligned = round_up(start, kHugePageBytes);
    const std::size_t head = aligned - start;
    const std::size_t tail = mapped - head - wanted;
    if (head > 0) ::munmap(raw, head);
    if (tail > 0) ::munmap(reinterpret_cast<char*>(aligned) + wanted, tail);
    data_ = reinterpret_cast<void*>(aligned);
    (void)::madvise(data_, wanted, MADV_HUGEPAGE);  // advice: without it, 4 KiB pages as before
  }
  // A mapping of 4 KiB pages gets every page at once, in one call, rather than a page fault at each
  // first touch: on the virtual machines measured, a fault costs 12 to 15 us a page, populated 8.
  // (Its user touches all of it soon: an index at random, a ring up to its end before it grows.)
  // Huge pages fault far more cheaply (0.25 to 0.31 us a 4 KiB share, once the process has had a
  // few) and stay lazy, so that a large ring takes memory as it fills. Advice: a kernel before 5.14 refuses
  // it (EINVAL), and the pages then fault in as before.
#ifdef MADV_POPULATE_WRITE
  if (!huge) (void)::madvise(data_, wanted, MADV_POPULATE_WRITE);
#endif
}

MappedMemory::MappedMemory(MappedMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)) {}

MappedMemory& MappedMemory::operator=(MappedMemory&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
  }
  return *this;
}

MappedMemory::~MappedMemory() { release(); }

void MappedMemory::release() {
  if (data_ != nullptr) ::munmap(data_, mapped_bytes_);
  data_ = nullptr;
  size_ = mapped_bytes_ = 0;
}

}  // namespace mq::detail

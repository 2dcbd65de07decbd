// Zeroed memory straight from the kernel (an anonymous mapping), for the few structures that grow
// to many megabytes and are written once per message (the dedup window's entries and index).
//
// Why not new[]: on the virtual machines this runs on, the first touch of a 4 KiB page costs about
// 12 us (measured: 64 MiB touched a cache line at a time, 12 us per page with 4 KiB pages, 3.5 with
// transparent huge pages). A window that grows by a million ids touches 12,000 pages for its
// entries alone. Large mappings ask for huge pages (MADV_HUGEPAGE; a kernel with transparent huge
// pages off ignores it); smaller ones have all their pages made at once (MADV_POPULATE_WRITE).
// Neither needs a zeroing pass of our own: the kernel's pages are zero.
#pragma once

#include <cstddef>

namespace mq::detail {

class MappedMemory {
 public:
  // Mappings of at least this many bytes ask for huge pages, and are aligned to them.
  static constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

  MappedMemory() = default;
  // `bytes` zeroed bytes (rounded up to whole pages); throws std::bad_alloc when the kernel refuses.
  explicit MappedMemory(std::size_t bytes);
  MappedMemory(MappedMemory&& other) noexcept;
  MappedMemory& operator=(MappedMemory&& other) noexcept;
  MappedMemory(const MappedMemory&) = delete;
  MappedMemory& operator=(const MappedMemory&) = delete;
  ~MappedMemory();

  void* data() const { return data_; }
  std::size_t size() const { return size_; }  // as asked for
  bool empty() const { return data_ == nullptr; }

 private:
  void release();

  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t mapped_bytes_ = 0;  // size_ rounded up to whole pages: what munmap gets back
};

}  // namespace mq::detail

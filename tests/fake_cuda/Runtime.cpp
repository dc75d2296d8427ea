// The stand-in runtime's state (Runtime.hpp).
#include "Runtime.hpp"

#include <algorithm>

namespace fake_cuda {
namespace {

// Address space for every device's memory, inaccessible until allocations reach it (nullptr for
// no devices).
std::byte* reserve(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("fake CUDA runtime: reserving device memory");
    std::abort();
  }
  return static_cast<std::byte*>(p);
}

}  // namespace

Runtime::Runtime()
    : devices_(static_cast<int>(env_number("MMSB_FAKE_CUDA_DEVICES", 2))),
      memory_(round_up(env_number("MMSB_FAKE_CUDA_MEMORY_MIB", 4096) << 20, kPage)),
      region_(reserve(memory_ * static_cast<std::size_t>(devices_))),
      key_(region_ != nullptr && env_number("MMSB_FAKE_CUDA_NO_PKEYS", 0) == 0 ? pkey_alloc(0, PKEY_DISABLE_ACCESS)
                                                                                : -1),
      executor_(key_) {
  device_.resize(static_cast<std::size_t>(devices_));
  for (int d = 0; d < devices_; ++d) {
    Device& dev = device_[static_cast<std::size_t>(d)];
    dev.base = region_ + memory_ * static_cast<std::size_t>(d);
    dev.free.emplace(dev.base, memory_);
  }
}


void* Runtime::allocate_device(int d, std::size_t bytes) {
  Device& dev = device(d);
  const std::size_t n = round_up(std::max<std::size_t>(bytes, 1), kAlign);
  for (auto it = dev.free.begin(); it != dev.free.end(); ++it) {
    if (it->second < n) continue;
    std::byte* p = it->first;
    const std::size_t left = it->second - n;
    dev.free.erase(it);
    if (left > 0) dev.free.emplace(p + n, left);
    dev.used += n;
    const std::size_t high = round_up(static_cast<std::size_t>(p + n - dev.base), kPage);
    // With a key, pages become accessible as allocations first reach them, and the key alone
    // guards them; without, they stay PROT_NONE and each Open lifts that.
    if (key_ >= 0 && high > dev.high &&
        pkey_mprotect(dev.base + dev.high, high - dev.high, PROT_READ | PROT_WRITE, key_) != 0) {
      std::perror("fake CUDA runtime: pkey_mprotect of device memory");
      std::abort();
    }
    dev.high = std::max(dev.high, high);
    allocations_.emplace(p, Allocation{n, Kind::Device, d});
    return p;
  }
  return nullptr;
}

void* Runtime::allocate_host(std::size_t bytes, Kind kind, int d) {
  const std::size_t n = round_up(std::max<std::size_t>(bytes, 1), kPage);
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  allocations_.emplace(static_cast<std::byte*>(p), Allocation{n, kind, d});
  if (kind == Kind::Managed) device(d).used += n;
  return p;
}

bool Runtime::release(void* p, std::initializer_list<Kind> kinds) {
  auto it = allocations_.find(static_cast<std::byte*>(p));
  if (it == allocations_.end() || std::find(kinds.begin(), kinds.end(), it->second.kind) == kinds.end()) {
    return false;
  }
  const Allocation a = it->second;
  allocations_.erase(it);
  auto* b = static_cast<std::byte*>(p);
  if (a.kind != Kind::Device) {
    if (a.kind == Kind::Managed) device(a.device).used -= a.size;
    munmap(p, a.size);
    return true;
  }
  Device& dev = device(a.device);
  dev.used -= a.size;
  // Give whole pages back to the system, then merge the range with its free neighbours.
  std::byte* first = reinterpret_cast<std::byte*>(round_up(reinterpret_cast<std::uintptr_t>(b), kPage));
  std::byte* last = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(b + a.size) / kPage * kPage);
  if (first < last) madvise(first, static_cast<std::size_t>(last - first), MADV_DONTNEED);
  std::size_t size = a.size;
  auto next = dev.free.find(b + size);
  if (next != dev.free.end()) {
    size += next->second;
    dev.free.erase(next);
  }
  auto after = dev.free.upper_bound(b);
  if (after != dev.free.begin()) {
    auto before = std::prev(after);
    if (before->first + before->second == b) {
      before->second += size;
      return true;
    }
  }
  dev.free.emplace(b, size);
  return true;
}

Runtime& rt() {
  static Runtime* r = new Runtime;
  return *r;
}

}  // namespace fake_cuda

#pragma once
/// DefaultInitAllocator: a std::allocator whose value-less construct() default-initializes, so
/// `resize(n)` of a vector of trivial elements leaves them unwritten instead of zeroing them. For
/// buffers whose every element is written before it is read (a batch's undo bytes, filled by the
/// apply as each row writes): zeroing a 4096-row batch's 256 KiB first was two fifths of what
/// recording its undo cost.
///
/// Thread safety: as std::allocator (stateless). Throws what std::allocator throws.
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace mmsb {

template <class T>
class DefaultInitAllocator : public std::allocator<T> {
 public:
  using std::allocator<T>::allocator;
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() noexcept = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}  // NOLINT: converting, as std::allocator's

  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::allocator_traits<std::allocator<T>>::construct(static_cast<std::allocator<T>&>(*this), p,
                                                        std::forward<Args>(args)...);
  }
};

/// A vector whose resize() leaves new trivial elements unwritten.
template <class T>
using UninitVector = std::vector<T, DefaultInitAllocator<T>>;

}  // namespace mmsb

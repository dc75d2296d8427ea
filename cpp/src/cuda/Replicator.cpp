// The batch logic of a Replicator: validation, overlap resolution and hashing (the wire layout is
// ReplicaWire.cpp).
// Host code, built in every configuration; the ranks and the device are behind ReplicaChannel.
#include "mmsb/cuda/Replicator.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <random>

#include "ReplicaChannel.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/page/PageTable.hpp"

namespace mmsb::cuda {
namespace {

constexpr std::uint64_t kFnvOffset = 14695981039346656037ull;
constexpr std::uint64_t kFnvPrime = 1099511628211ull;

// FNV-1a 64 of `value`'s little-endian bytes, continuing from `h`.
template <class T>
std::uint64_t fnv1a(std::uint64_t h, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    h ^= static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i));
    h *= kFnvPrime;
  }
  return h;
}

std::uint64_t sizes_fingerprint(const std::vector<std::uint64_t>& sizes) {
  std::uint64_t h = fnv1a(kFnvOffset, std::uint64_t{sizes.size()});
  for (std::uint64_t s : sizes) h = fnv1a(h, s);
  return h;
}

}  // namespace

#if !MMSB_HAVE_NCCL
// Without NCCL support (no CUDA, or MMSB_WITH_NCCL=OFF) NcclChannel.cpp is not built: only emulated
// devices replicate.
std::unique_ptr<ReplicaChannel> make_nccl_channel(int, int, const NcclUniqueId&, DeviceBackend& backend) {
  fail(ErrorCode::DeviceUnavailable, "NCCL replication on ", backend.location(),
       " requested, but this mmsb was built without NCCL support (MMSB_WITH_NCCL=OFF or no CUDA)");
}
#endif

NcclUniqueId Replicator::unique_id() {
  NcclUniqueId id{};
  if (emulated_devices() > 0) {  // the loopback group's key: fresh like NCCL's, no library needed
    std::random_device rd;
    for (char& c : id.internal) c = static_cast<char>(rd());
    return id;
  }
  const NcclLibrary& nccl = nccl_library();
  nccl.check(nccl.get_unique_id(&id), "ncclGetUniqueId");
  return id;
}

Replicator::Replicator(int nranks, int rank, const NcclUniqueId& id, int ordinal, std::vector<std::uint64_t> page_sizes)
    : nranks_(nranks), rank_(rank), ordinal_(ordinal), page_sizes_(std::move(page_sizes)) {
  if (nranks < 1) fail(ErrorCode::InvalidArgument, "Replicator: nranks must be at least 1, got ", nranks);
  if (rank < 0 || rank >= nranks) {
    fail(ErrorCode::InvalidArgument, "Replicator: rank ", rank, " is outside [0, ", nranks, ")");
  }
  if (ordinal < 0) fail(ErrorCode::InvalidArgument, "Replicator: CUDA device ordinal must be >= 0, got ", ordinal);
  if (page_sizes_.empty()) fail(ErrorCode::InvalidArgument, "Replicator: needs at least one page size");
  for (std::size_t i = 0; i < page_sizes_.size(); ++i) {
    if (page_sizes_[i] == 0) fail(ErrorCode::InvalidArgument, "Replicator: page ", i, " has 0 bytes");
    if (page_sizes_[i] > PageTable::kMaxPageSize) {
      fail(ErrorCode::InvalidArgument, "Replicator: page ", i, " has ", page_sizes_[i], " bytes, more than a page may (",
           PageTable::kMaxPageSize, " bytes, 1 TiB)");
    }
  }
  backend_ = &device_backend("cuda:" + std::to_string(ordinal));
  if (backend_->emulated()) {
    channel_ = make_loopback_channel(*backend_, nranks, rank, id);
  } else {
    channel_ = make_nccl_channel(nranks, rank, id, *backend_);
  }
  // Every rank sees every fingerprint, so all ranks refuse together and none waits for the others.
  const std::vector<std::uint64_t> prints = channel_->all_gather(sizes_fingerprint(page_sizes_));
  for (std::size_t r = 0; r < prints.size(); ++r) {
    if (prints[r] != prints[0]) {
      fail(ErrorCode::InvalidArgument, "Replicator: rank ", r, " has other page sizes than rank 0 (", page_sizes_.size(),
           " pages here); every rank must pass the same page_sizes");
    }
  }
  std::exception_ptr alloc_error;
  try {
    pages_.reserve(page_sizes_.size());
    for (std::uint64_t size : page_sizes_) pages_.push_back(backend_->allocate(size));
    page_data_.reserve(pages_.size());
    for (const DevicePool::Block& b : pages_) page_data_.push_back(b.data);
  } catch (...) {
    alloc_error = std::current_exception();
    release_pages();
  }
  // Every rank learns whether all could allocate, so a rank out of memory does not leave the others
  // waiting in their first broadcast.
  std::vector<std::uint64_t> failed;
  try {
    failed = channel_->all_gather(alloc_error ? 1 : 0);
  } catch (...) {
    release_pages();
    throw;
  }
  if (alloc_error) std::rethrow_exception(alloc_error);
  for (std::size_t r = 0; r < failed.size(); ++r) {
    if (failed[r] != 0) {
      release_pages();
      fail(ErrorCode::OutOfMemory, "Replicator: rank ", r, " could not allocate its replicas");
    }
  }
}

Replicator::~Replicator() {
  channel_.reset();  // waits for the device, so no copy still writes a page released below
  release_pages();
}

void Replicator::release_pages() noexcept {
  for (const DevicePool::Block& b : pages_) backend_->release(b);
  pages_.clear();
  page_data_.clear();
}

void Replicator::ensure_usable() const {
  if (!failure_.empty()) {
    fail(ErrorCode::DeviceUnavailable, "Replicator rank ", rank_, " of ", nranks_, " on cuda:", ordinal_,
         " is unusable after an earlier failure: ", failure_);
  }
}

void Replicator::broadcast(std::span<const ReplicaRow> rows, std::span<const std::byte> payload) {
  std::lock_guard g(mutex_);
  ensure_usable();
  if (rank_ != 0) {
    fail(ErrorCode::InvalidArgument, "Replicator.broadcast: only rank 0 broadcasts; rank ", rank_,
         " calls receive()");
  }
  std::uint64_t needed = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const ReplicaRow& r = rows[i];
    if (r.page >= page_sizes_.size()) {
      fail(ErrorCode::InvalidArgument, "Replicator.broadcast: row ", i, " names page ", r.page, " but there are ",
           page_sizes_.size(), " pages");
    }
    const std::uint64_t size = page_sizes_[r.page];
    if (r.offset > size || r.length > size - r.offset) {
      fail(ErrorCode::InvalidArgument, "Replicator.broadcast: row ", i, " (", r.length, " bytes at offset ", r.offset,
           ") runs past the end of page ", r.page, " (", size, " bytes)");
    }
    if (r.length > payload.size() - needed) {
      fail(ErrorCode::InvalidArgument, "Replicator.broadcast: rows 0..", i, " need more than the ", payload.size(),
           " payload bytes given");
    }
    needed += r.length;
  }
  if (needed != payload.size()) {
    fail(ErrorCode::InvalidArgument, "Replicator.broadcast: the rows need ", needed, " payload bytes but ",
         payload.size(), " were given");
  }
  run_batch(rows, payload);
}

void Replicator::receive() {
  std::lock_guard g(mutex_);
  ensure_usable();
  if (rank_ == 0) fail(ErrorCode::InvalidArgument, "Replicator.receive: rank 0 is the sender; it calls broadcast()");
  run_batch({}, {});
}

void Replicator::run_batch(std::span<const ReplicaRow> rows, std::span<const std::byte> payload) {
  // From the first collective on, a failure may leave the ranks out of step: the replicator is
  // then unusable rather than silently diverging.
  try {
    const bool root = rank_ == 0;
    std::vector<WireRow> wire;
    WireHeader header;
    if (root) header = plan_wire(rows, ticks_ + 1, wire);
    channel_->broadcast(std::as_writable_bytes(std::span(&header, 1)));
    if (!root) check_wire_header(header, ticks_ + 1);
    const std::uint64_t table_bytes = header.rows * sizeof(WireRow);
    if (root && header.body_bytes > 0) pack_wire(wire, payload, channel_->stage(header.body_bytes));
    channel_->load_body(header.body_bytes);
    if (!root && table_bytes > 0) {
      const std::span<std::byte> table = channel_->stage(table_bytes);
      channel_->fetch_body(table_bytes);
      wire.resize(header.rows);
      std::memcpy(wire.data(), table.data(), table_bytes);
    }
    std::vector<DeviceRun> runs;
    wire_runs(wire, header, page_sizes_, page_data_, runs);
    resolve_overlaps(runs);
    channel_->apply(runs);
    ticks_ = header.tick;
  } catch (const std::exception& e) {
    failure_ = e.what();
    throw;
  }
}

std::uint64_t Replicator::hash() {
  std::lock_guard g(mutex_);
  ensure_usable();
  return hash_locked();
}

std::uint64_t Replicator::hash_locked() {
  std::uint64_t h = kFnvOffset;
  for (std::size_t i = 0; i < pages_.size(); ++i) {
    h = fnv1a(fnv1a(h, page_sizes_[i]), backend_->crc32c(pages_[i].data, page_sizes_[i]));
  }
  return h;
}

bool Replicator::check() {
  std::lock_guard g(mutex_);
  ensure_usable();
  const std::uint64_t mine = hash_locked();
  std::vector<std::uint64_t> all;
  try {
    all = channel_->all_gather(mine);
  } catch (const std::exception& e) {
    failure_ = e.what();
    throw;
  }
  return std::all_of(all.begin(), all.end(), [&](std::uint64_t h) { return h == all.front(); });
}

std::vector<std::byte> Replicator::read(std::uint64_t page) {
  std::lock_guard g(mutex_);
  ensure_usable();
  if (page >= pages_.size()) {
    fail(ErrorCode::InvalidArgument, "Replicator.read: page ", page, " is out of range (", pages_.size(), " pages)");
  }
  std::vector<std::byte> out(page_sizes_[page]);
  const DeviceRun run{pages_[page].data, 0, out.size()};
  backend_->read(std::span(&run, 1), out);
  return out;
}

std::uint64_t Replicator::ticks() const {
  std::lock_guard g(mutex_);
  return ticks_;
}

bool Replicator::attach(const void* owner) {
  std::lock_guard g(mutex_);
  if (attached_ != 0 && owner_ != owner) return false;
  owner_ = owner;
  ++attached_;
  return true;
}

bool Replicator::attached() const {
  std::lock_guard g(mutex_);
  return attached_ != 0;
}

void Replicator::detach(const void* owner) noexcept {
  std::lock_guard g(mutex_);
  if (attached_ == 0 || owner_ != owner) return;
  if (--attached_ == 0) owner_ = nullptr;
}

}  // namespace mmsb::cuda

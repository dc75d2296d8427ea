// Pages and the memory that holds them: moving a page between host and device memory (p.to), the
// exports that forbid it while something outside the bus holds the address of the page's bytes,
// and edits made on the device (Page.edit of a device page).
#include "mmsb/engine/Bus.hpp"

#include "DevicePages.hpp"
#include "mmsb/core/Clock.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/DeviceStaging.hpp"
#include "mmsb/log/RecordCodec.hpp"

namespace mmsb {

bool Bus::move_page(PageId id, const std::string& location) {
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  // Refused before the location is looked at: also a move to where the page is, or to a device
  // this machine lacks, is a call a transaction does not take.
  if (txn_) {
    fail(ErrorCode::InvalidArgument, "page ", id, " cannot move to ", location,
         " inside a transaction: a rollback does not move it back; move it before or after the transaction");
  }
  const std::uint8_t place = devices_->place(location, false);  // may register the location
  if (place == r.place) return false;
  // Held through the swap: an export registered after this sees the new address.
  std::lock_guard exports(exports_mutex_);
  if (auto it = exports_.find(id); it != exports_.end()) {
    fail(ErrorCode::InvalidArgument, "page ", id, " cannot move to ", location, " while ", it->second,
         " view(s) or export(s) of its bytes are alive (NumPy views, memoryviews, DLPack tensors): they would "
         "point at freed memory; drop them first, then take new ones after the move");
  }
  const std::string name = place == 0 ? std::string("cpu") : table_.placement(place)->location();
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  relocate_locked(r, place, name, [&] {
    if (!logging()) return;
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, LocationOp{id, name});
    log_locked(lsn);
  });
  lsn_.store(lsn, std::memory_order_release);
  return true;
}

void Bus::relocate_locked(PageRecord& r, std::uint8_t place, const std::string& location,
                          const std::function<void()>& log) {
  const PageInfo* info = table_.info(r.id);
  const std::string before = info != nullptr ? info->location : "cpu";
  const auto rename_and_log = [&] {
    table_.set_location(r.id, location);
    try {
      if (log) log();
    } catch (...) {
      table_.set_location(r.id, before);
      throw;
    }
  };
  // A view of the past keeps every page on the host: only the name changes there.
  if (place == r.place) return rename_and_log();
  table_.relocate(r, place, [&](std::byte* dst) {
    devices_->copy_page(r, place, dst);
    rename_and_log();
  });
}

void Bus::add_export(const PageRecord& r) {
  std::lock_guard g(exports_mutex_);
  ++exports_[r.id];
}

void Bus::drop_export(const PageRecord& r) noexcept {
  std::lock_guard g(exports_mutex_);
  auto it = exports_.find(r.id);
  if (it != exports_.end() && --it->second == 0) exports_.erase(it);
}

std::unique_ptr<DeviceStaging> Bus::stage_on_device(PageId id) {
  auto lock = lock_turn();
  check_open();
  const PageRecord& r = live_locked(id);
  if (!devices_->on_device(r)) {
    fail(ErrorCode::InvalidArgument, "page ", id, " is not in device memory: cpu and unified pages are edited on "
         "the host; only cuda:N pages are staged on their device");
  }
  return devices_->stage(r);
}

bool Bus::commit_staged(const DeviceStaging& staging) {
  const std::uint64_t t0 = monotonic_ns();
  staging.backend().settle();  // the editor's kernels, on streams of its own, have finished
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(staging.page());
  if (r.place != staging.place()) {
    fail(ErrorCode::InvalidArgument, "page ", r.id, " moved (Page.to) while it was being edited on the device; "
         "nothing was committed");
  }
  Delta d;
  devices_->diff_on_device(r.id, r, staging.data(), d);
  d.expect_epoch = staging.epoch();
  return commit_diff(lock, r, d, t0);
}

void Bus::prefetch_for_device(PageId id, void* stream) {
  auto lock = lock_turn();
  check_open();
  devices_->lend_to_device(live_locked(id), stream);
}

}  // namespace mmsb

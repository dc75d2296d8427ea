// Simulated power loss: a FileObserver keeps, per file, the bytes made durable by the last
// fdatasync and the writes since then. At the N-th write of a workload the "machine dies"; the
// disk image is then built from the durable bytes plus some fate of the unsynced writes (all
// lost, all kept, a prefix with a torn last write, a random subset in random order, or kept but
// garbled), written to a fresh directory and recovered. For every N and every fate, recovery
// must give exactly the state of a committed prefix no shorter than the last synced commit.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>

#include "log/LogTestUtil.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::DurableState;

struct SimulatedCrash {};

class CrashingDisk final : public FileObserver {
 public:
  explicit CrashingDisk(std::uint64_t crash_at) : crash_at_(crash_at) {}

  void before_write(const std::string& path, std::uint64_t offset, std::span<const std::byte> bytes) override {
    check_alive();
    if (++writes_ == crash_at_) crash();
    files_[path].pending.push_back(Write{offset, Bytes(bytes.begin(), bytes.end()), false});
  }
  void before_sync(const std::string& path) override {
    check_alive();
    if (std::filesystem::is_directory(path)) return;  // entries: see before_rename
    File& f = files_[path];
    f.durable = test::read_file(path);  // every write so far has reached the file
    f.has_durable = true;
    f.pending.clear();
  }
  void before_truncate(const std::string& path, std::uint64_t size) override {
    check_alive();
    files_[path].pending.push_back(Write{size, {}, true});
  }
  // Renames are followed by a directory sync before any further write, so at a crash (which
  // happens at a write) a rename is either not made or durable. The file keeps what it had: a
  // rename makes its name durable, not its unsynced writes (a checkpoint renamed before its
  // fdatasync may come back empty or torn).
  void before_rename(const std::string& from, const std::string& to) override {
    check_alive();
    auto it = files_.find(from);
    File f = it != files_.end() ? std::move(it->second) : File{test::read_file(from), true, {}};
    if (it != files_.end()) files_.erase(it);
    files_[to] = std::move(f);
  }

  // The worst case for a crash right after: the file is gone at once (its directory entry need
  // not wait for a directory sync to disappear).
  void before_remove(const std::string& path) override {
    check_alive();
    files_.erase(path);
  }

  std::uint64_t writes() const noexcept { return writes_; }
  bool crashed() const noexcept { return crashed_; }

  /// Writes the disk as the crash left it into `dir`, unsynced writes meeting fate `fate`.
  void materialize(const std::string& dir, int fate, std::mt19937_64& rng) const {
    for (const auto& [path, f] : files_) {
      if (!f.has_durable && f.pending.empty()) continue;
      Bytes image = f.durable;
      std::vector<Write> kept = f.pending;
      switch (fate) {
        case 0: kept.clear(); break;                                      // all lost
        case 1: break;                                                    // all kept
        case 2: {                                                         // prefix, last one torn
          kept.resize(kept.empty() ? 0 : std::uniform_int_distribution<std::size_t>(1, kept.size())(rng));
          if (!kept.empty() && !kept.back().truncate) {
            Bytes& b = kept.back().bytes;
            b.resize(std::uniform_int_distribution<std::size_t>(0, b.size())(rng));
          }
          break;
        }
        case 3: {                                                         // subset, any order
          std::shuffle(kept.begin(), kept.end(), rng);
          kept.resize(std::uniform_int_distribution<std::size_t>(0, kept.size())(rng));
          break;
        }
        default: break;                                                   // kept, then garbled
      }
      for (const Write& w : kept) {
        if (w.truncate) {
          image.resize(w.offset);
          continue;
        }
        if (image.size() < w.offset + w.bytes.size()) image.resize(w.offset + w.bytes.size());
        std::copy(w.bytes.begin(), w.bytes.end(), image.begin() + static_cast<std::ptrdiff_t>(w.offset));
      }
      if (fate == 4 && !kept.empty() && !kept.back().truncate && !kept.back().bytes.empty()) {
        const Write& w = kept.back();
        for (int i = 0; i < 3; ++i) {
          image[w.offset + std::uniform_int_distribution<std::size_t>(0, w.bytes.size() - 1)(rng)] ^= std::byte{0x5A};
        }
      }
      if (!f.has_durable && image.empty()) continue;
      test::write_file(dir + "/" + std::filesystem::path(path).filename().string(), image);
    }
  }

 private:
  struct Write {
    std::uint64_t offset;
    Bytes bytes;
    bool truncate;
  };
  struct File {
    Bytes durable;
    bool has_durable = false;
    std::vector<Write> pending;
  };
  [[noreturn]] void crash() {
    crashed_ = true;
    throw SimulatedCrash{};
  }
  // After the crash nothing reaches the disk any more (destructors of the dead bus included).
  void check_alive() {
    if (crashed_) throw SimulatedCrash{};
  }

  std::uint64_t crash_at_;
  std::uint64_t writes_ = 0;
  bool crashed_ = false;
  std::map<std::string, File> files_;
};

// Runs the seeded workload on a fresh bus until the disk crashes (or the workload ends).
// Returns the last lsn a commit acknowledged, the last lsn made durable by a checkpoint, and the
// snapshots per lsn.
struct CrashRun {
  Lsn acknowledged = 0;
  Lsn checkpointed = 0;
  std::map<Lsn, DurableState> snapshots;
};
CrashRun run_until_crash(const std::string& dir, Durability durability, CrashingDisk& disk, int steps,
                         std::optional<unsigned> retention) {
  CrashRun out;
  set_file_observer(&disk);
  try {
    BusOptions options = test::dir_options(dir, durability);
    options.retention = retention;
    Bus bus(options);
    test::RandomWorkload work(bus, 99, "w", 0.08);
    for (int i = 0; i < steps; ++i) {
      work.step(bus);
      out.acknowledged = bus.lsn();
      out.checkpointed = work.last_checkpoint();
    }
    out.snapshots = work.snapshots();
    set_file_observer(nullptr);
  } catch (const SimulatedCrash&) {
    set_file_observer(nullptr);
  }
  return out;
}

// fsync: every commit is synced before it is acknowledged, so under any fate of the unsynced
// writes nothing acknowledged may be lost. flush: commits reach the OS only; a killed process
// loses nothing (fate "all kept"), and power loss, whatever it does to the unsynced writes (lost
// from the end, torn, kept out of order, garbled), still leaves a committed prefix reaching at
// least the last checkpoint: damage past the last sync mark is a torn tail, not corruption.
// With a retention, the log a checkpoint covers is deleted: the checkpoint is then the only copy
// of what it holds.
void crash_at_every_write(Durability durability, int fates, std::optional<unsigned> retention = std::nullopt) {
  constexpr int kSteps = 30;
  test::TempDir tmp;
  CrashingDisk counter(~std::uint64_t{0});  // a crash-free run: reference states, write count
  const CrashRun reference = run_until_crash(tmp.path() + "/reference", durability, counter, kSteps, retention);
  ASSERT_GT(counter.writes(), 30u);
  std::mt19937_64 rng(7);
  int recoveries = 0;
  for (std::uint64_t n = 1; n <= counter.writes(); ++n) {
    const std::string live = tmp.path() + "/live" + std::to_string(n);
    CrashingDisk disk(n);
    const CrashRun run = run_until_crash(live, durability, disk, kSteps, retention);
    ASSERT_TRUE(disk.crashed()) << "write " << n;
    for (int fate = 0; fate < fates; ++fate) {
      const std::string image = live + "-fate" + std::to_string(fate);
      std::filesystem::create_directories(image);
      disk.materialize(image, fate, rng);
      const Lsn must_keep = durability == Durability::Fsync || fate == 1 ? run.acknowledged : run.checkpointed;
      if (test::segment_files(image).empty() && test::checkpoint_files(image).empty()) {
        ASSERT_EQ(must_keep, 0u) << "write " << n << " fate " << fate << ": a durable commit left no file";
        continue;
      }
      Bus bus(test::dir_options(image, durability, /*must_exist=*/true));
      const Lsn got = bus.lsn();
      ASSERT_GE(got, must_keep) << "write " << n << " fate " << fate;
      const auto want = reference.snapshots.find(got);
      ASSERT_NE(want, reference.snapshots.end()) << "write " << n << " fate " << fate << ": lsn " << got
                                                  << " is not a commit boundary";
      ASSERT_TRUE(test::same_durable(want->second, test::durable_state(bus))) << "write " << n << " fate " << fate;
      ++recoveries;
    }
  }
  EXPECT_GT(recoveries, static_cast<int>(counter.writes()) * (fates - 1));
}

TEST(SimulatedCrash, FsyncEveryWriteEveryFateKeepsEveryAcknowledgedCommit) {
  crash_at_every_write(Durability::Fsync, 5);
}

TEST(SimulatedCrash, FlushEveryWriteEveryFateKeepsACommittedPrefixPastTheLastCheckpoint) {
  crash_at_every_write(Durability::Flush, 5);
}

TEST(SimulatedCrash, WithARetentionTheCheckpointThatReplacedTheLogSurvivesEveryFate) {
  for (const Durability d : {Durability::Fsync, Durability::Flush}) {
    SCOPED_TRACE(durability_name(d));
    crash_at_every_write(d, 5, 1);
  }
}

}  // namespace
}  // namespace mmsb

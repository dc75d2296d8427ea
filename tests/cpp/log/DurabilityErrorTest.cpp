// A write that fails (here: the file size limit, RLIMIT_FSIZE) must fail the commit with
// Error(Durability) and leave the bus exactly as before it; the log must be cut back so that
// later commits still append cleanly and a reopen restores exactly the successful commits.
// The limit is set in a forked child, so the test process keeps its own limits.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <functional>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {
namespace {

using test::Bytes;

enum class Commit { Write, Batch, CreateWithData };

struct Case {
  Durability durability;
  Commit commit;
};
std::string case_text(const Case& c) {
  static const char* commits[] = {"Write", "Batch", "CreateWithData"};
  return std::string(durability_name(c.durability)) + "_" + commits[static_cast<int>(c.commit)];
}
void PrintTo(const Case& c, std::ostream* os) { *os << case_text(c); }

// A deterministic script: setup() then commit(i) for i = 0, 1, ... then the small final commit.
// Each commit(i) logs a record of kRecordBytes of payload plus up to ~25% framing (1.1-1.25 KiB),
// so a limit of 2.75 payloads above the segment size lets two through and fails the third, with
// room left for the final commit (a ~56-byte record).
constexpr std::uint64_t kRecordBytes = 1024;
constexpr std::uint64_t kHeadroom = 2 * kRecordBytes + kRecordBytes * 3 / 4;
constexpr int kMaxCommits = 50;

class Script {
 public:
  explicit Script(Commit kind) : kind_(kind) {}

  void setup(Bus& bus) {
    test::Rng rng(1);
    PageSpec a;
    a.size = 4 * kRecordBytes;
    a.name = "a";
    a_ = bus.create_page(a).id;
    PageSpec b;
    b.size = 2 * kRecordBytes;
    b.dtype = DType::Int32;
    b_ = bus.create_page(b, test::random_bytes(rng, b.size)).id;
    bus.set_metadata(a_, "k", MetaValue{"v", false});
  }

  // Commit i's bytes depend on i only, so a replay that skips the failed commit draws the same.
  void commit(Bus& bus, int i) {
    const auto u = static_cast<std::uint64_t>(i);
    test::Rng rng(1000 + u);
    switch (kind_) {
      case Commit::Write:
        bus.write(a_, (u * 7) % kRecordBytes, test::random_bytes(rng, kRecordBytes));
        break;
      case Commit::Batch: {
        DeltaBatch batch;
        for (std::uint64_t row = 0; row < 8; ++row) {
          batch.add(row % 2 == 0 ? a_ : b_, (u + row) * 16, test::random_bytes(rng, kRecordBytes / 8));
        }
        bus.apply_batch(batch.view());
        break;
      }
      case Commit::CreateWithData: {
        PageSpec spec;
        spec.size = kRecordBytes;
        spec.name = "c" + std::to_string(i);
        bus.create_page(spec, test::random_bytes(rng, spec.size));  // one transaction record
        break;
      }
    }
  }

  void finish(Bus& bus) { bus.set_metadata(a_, "done", MetaValue{"yes", false}); }

 private:
  Commit kind_;
  PageId a_ = 0;
  PageId b_ = 0;
};

// Sets the file size limit of this (child) process; writes past it then fail with EFBIG.
std::string limit_file_size(rlim_t bytes) {
  const rlimit limit{bytes, RLIM_INFINITY};
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return "setrlimit failed";
  ::signal(SIGXFSZ, SIG_IGN);  // else the kernel kills the process instead of failing write()
  return "";
}

// The child's side: reports "<commits that succeeded> <what went wrong, or nothing>".
std::string run_until_failure(const std::string& path, const Case& c) {
  Bus bus(test::dir_options(path, c.durability));
  Script script(c.commit);
  script.setup(bus);
  // From where the records end, not the file's size: an fsync writer keeps zeros ahead of them.
  if (std::string err = limit_file_size(scan_segment(test::segment_files(path).back()).valid_end + kHeadroom);
      !err.empty()) {
    return "0 " + err;
  }
  int ok = 0;
  auto report = [&](const std::string& what) { return std::to_string(ok) + " " + what; };
  for (; ok < kMaxCommits; ++ok) {
    const test::BusState before = test::capture(bus);
    try {
      script.commit(bus, ok);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Durability) return report(std::string("wrong error: ") + e.what());
      if (auto same = test::same_state(before, test::capture(bus)); !same) {
        return report("the failed commit changed the bus: " + std::string(same.message()));
      }
      break;
    }
  }
  if (ok == kMaxCommits) return report("no commit failed");
  if (ok == 0) return report("the limit left no room for a commit");
  try {
    script.finish(bus);  // the log must still be usable after a failed append
    bus.close();
  } catch (const Error& e) {
    return report(std::string("commit after the failure: ") + e.what());
  }
  return report("");
}

// The state the directory must hold: `script` replayed on an in-memory bus by `steps`.
test::DurableState model_state(Commit kind, const std::function<void(Bus&, Script&)>& steps) {
  Bus model;
  Script script(kind);
  script.setup(model);
  steps(model, script);
  return test::durable_state(model);
}

void expect_reopens_cleanly_to(const std::string& path, const test::DurableState& want) {
  Bus reopened(test::dir_options(path, Durability::Flush, /*must_exist=*/true));
  EXPECT_FALSE(reopened.recovery().truncated_tail)
      << "the failed write was not cut back: " << reopened.recovery().tail_reason;
  EXPECT_TRUE(test::same_durable(want, test::durable_state(reopened)));
}

class DurabilityErrorTest : public ::testing::TestWithParam<Case> {
 protected:
  test::TempDir dir_;
  std::string path_ = dir_ / "bus";
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return case_text(info.param); }

TEST_P(DurabilityErrorTest, FailedWriteChangesNothingAndReopenSeesTheSuccessfulCommits) {
  const test::ChildResult child = test::run_in_child([&] { return run_until_failure(path_, GetParam()); });
  ASSERT_TRUE(WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0) << "child died, status " << child.status;
  const std::size_t space = child.report.find(' ');
  ASSERT_NE(space, std::string::npos) << child.report;
  ASSERT_EQ(child.report.substr(space + 1), "") << "child: " << child.report;
  const int ok = std::stoi(child.report.substr(0, space));
  expect_reopens_cleanly_to(path_, model_state(GetParam().commit, [&](Bus& bus, Script& script) {
                              for (int i = 0; i < ok; ++i) script.commit(bus, i);
                              script.finish(bus);
                            }));
}

INSTANTIATE_TEST_SUITE_P(
    Injected, DurabilityErrorTest,
    ::testing::Values(Case{Durability::Flush, Commit::Write}, Case{Durability::Flush, Commit::Batch},
                      Case{Durability::Flush, Commit::CreateWithData}, Case{Durability::Fsync, Commit::Write},
                      Case{Durability::Fsync, Commit::Batch}, Case{Durability::Fsync, Commit::CreateWithData}),
    case_name);

// durability=none writes at close: a failed write there is reported by close() (the bus is
// closed anyway), cut back, and a reopen finds the last checkpoint.
TEST(DurabilityNoneTest, CloseReportsAFailedWriteAndTheCheckpointSurvives) {
  test::TempDir dir;
  const std::string path = dir / "bus";
  const test::ChildResult child = test::run_in_child([&]() -> std::string {
    Bus bus(test::dir_options(path, Durability::None));
    Script script(Commit::Write);
    script.setup(bus);
    bus.checkpoint();
    if (std::string err = limit_file_size(test::fs::file_size(test::segment_files(path).back()) + kHeadroom);
        !err.empty()) {
      return err;
    }
    for (int i = 0; i < 5; ++i) script.commit(bus, i);  // buffered: more than the limit allows
    try {
      bus.close();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Durability) return std::string("wrong error: ") + e.what();
      return bus.closed() ? "" : "close() failed but left the bus open";
    }
    return "close() did not report the failed write";
  });
  ASSERT_TRUE(WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0) << "child died, status " << child.status;
  ASSERT_EQ(child.report, "");
  expect_reopens_cleanly_to(path, model_state(Commit::Write, [](Bus&, Script&) {}));
}

// A checkpoint that cannot be written leaves no file (not even its temporary) and a bus that
// keeps committing and checkpointing once the disk has room again.
TEST(DurabilityCheckpointTest, FailedCheckpointLeavesNoFileAndTheBusWorking) {
  test::TempDir dir;
  const std::string path = dir / "bus";
  const test::ChildResult child = test::run_in_child([&]() -> std::string {
    Bus bus(test::dir_options(path, Durability::Flush));
    Script script(Commit::Write);
    script.setup(bus);
    const test::BusState before = test::capture(bus);
    if (std::string err = limit_file_size(kRecordBytes); !err.empty()) return err;  // < one page
    try {
      bus.checkpoint();
      return "the checkpoint did not fail";
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Durability) return std::string("wrong error: ") + e.what();
    }
    if (auto same = test::same_state(before, test::capture(bus)); !same) return same.message();
    for (const auto& entry : test::fs::directory_iterator(path)) {
      if (entry.path().filename().string().starts_with("ckpt-")) return "left " + entry.path().string();
    }
    if (std::string err = limit_file_size(RLIM_INFINITY); !err.empty()) return err;
    script.commit(bus, 0);
    bus.checkpoint();
    script.finish(bus);
    bus.close();
    return "";
  });
  ASSERT_TRUE(WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0) << "child died, status " << child.status;
  ASSERT_EQ(child.report, "");
  EXPECT_EQ(test::checkpoint_files(path).size(), 1u);
  expect_reopens_cleanly_to(path, model_state(Commit::Write, [](Bus& bus, Script& script) {
                              script.commit(bus, 0);
                              script.finish(bus);
                            }));
}

}  // namespace
}  // namespace mmsb

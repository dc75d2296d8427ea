#pragma once
/// Looking at a bus directory without its lock, beside a writer in another process. What such a
/// look reads may be caught mid-change: the writer's retention deletes a file after it was
/// listed, or a record is read while it is being appended (a read is not atomic against a write
/// to the same file), with the sync mark after it already whole. Either looks like damage; a
/// later look sees the directory whole. Damage that is really there is seen every time.
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "mmsb/log/PosixFile.hpp"

namespace mmsb {

/// Calls look() until troubled(its answer) is false and returns the last answer. A troubled
/// look while the directory's files changed (created or deleted) is a race: looked at again, up
/// to 20 looks in all; one with the same files is looked at once more (an append caught half
/// way), and reported when the second is troubled too. 1 ms apart. For read-only looks only: a
/// writer holds the lock and reads nothing another process changes. Throws as list_directory.
template <class Look, class Troubled>
auto look_beside_writer(const std::string& dir, Look&& look, Troubled&& troubled) {
  auto listing = [&] {
    std::vector<std::string> names = list_directory(dir);
    std::sort(names.begin(), names.end());
    return names;
  };
  int quiet_troubles = 0;
  for (int looks = 1;; ++looks) {
    const std::vector<std::string> before = listing();
    auto answer = look();
    if (!troubled(answer) || looks == 20) return answer;
    if (listing() == before && ++quiet_troubles == 2) return answer;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace mmsb

#include "server/cpu_budget.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace masknet {
namespace {

struct Mount {
  std::string root;        // the mounted subtree of the hierarchy
  std::string mountpoint;  // where it is mounted
};

// The cgroup v1 mount carrying the cpu controller, or the v2 mount.
std::optional<Mount> FindMount(const std::string& mountinfo, bool v2) {
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n')) {
    // id parent major:minor root mountpoint options [optional...] - type source superoptions
    const std::vector<absl::string_view> halves = absl::StrSplit(line, " - ");
    if (halves.size() != 2) continue;
    const std::vector<absl::string_view> before = absl::StrSplit(halves[0], ' ');
    const std::vector<absl::string_view> after = absl::StrSplit(halves[1], ' ');
    if (before.size() < 5 || after.size() < 3) continue;
    if (v2 ? after[0] != "cgroup2" : after[0] != "cgroup") continue;
    if (!v2) {
      const std::vector<absl::string_view> options = absl::StrSplit(after[2], ',');
      if (std::find(options.begin(), options.end(), "cpu") == options.end()) continue;
    }
    return Mount{std::string(before[3]), std::string(before[4])};
  }
  return std::nullopt;
}

// The path of this process's cgroup: v1 for the cpu controller, or v2.
std::optional<std::string> CgroupPath(const std::string& proc_cgroup, bool v2) {
  for (absl::string_view line : absl::StrSplit(proc_cgroup, '\n')) {
    const std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (v2) {
      if (parts[0] == "0" && parts[1].empty()) return std::string(parts[2]);
      continue;
    }
    const std::vector<absl::string_view> controllers = absl::StrSplit(parts[1], ',');
    if (std::find(controllers.begin(), controllers.end(), "cpu") != controllers.end()) {
      return std::string(parts[2]);
    }
  }
  return std::nullopt;
}

std::optional<int> CpusOf(double quota, double period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return std::max(1, static_cast<int>((quota + period - 1) / period));
}

// The quota in one cgroup directory.
std::optional<int> QuotaIn(const FileReader& read, const std::string& dir, bool v2) {
  if (v2) {
    const auto max = read(dir + "/cpu.max");  // "max 100000" or "200000 100000"
    if (!max) return std::nullopt;
    const std::vector<absl::string_view> parts =
        absl::StrSplit(absl::StripAsciiWhitespace(*max), ' ', absl::SkipEmpty());
    double quota = 0, period = 0;
    if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &quota) || !absl::SimpleAtod(parts[1], &period)) {
      return std::nullopt;  // "max", or unreadable
    }
    return CpusOf(quota, period);
  }
  const auto quota_text = read(dir + "/cpu.cfs_quota_us");
  const auto period_text = read(dir + "/cpu.cfs_period_us");
  double quota = 0, period = 0;
  if (!quota_text || !period_text || !absl::SimpleAtod(absl::StripAsciiWhitespace(*quota_text), &quota) ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(*period_text), &period)) {
    return std::nullopt;
  }
  return CpusOf(quota, period);
}

std::optional<int> LimitOf(const FileReader& read, const std::string& proc_cgroup,
                           const std::string& mountinfo, bool v2) {
  const auto mount = FindMount(mountinfo, v2);
  const auto path = CgroupPath(proc_cgroup, v2);
  if (!mount || !path) return std::nullopt;
  // The cgroup's path relative to the mounted subtree (a container sees its
  // own cgroup mounted as the root).
  std::string relative = *path;
  if (mount->root != "/" && absl::StartsWith(relative, mount->root)) relative = relative.substr(mount->root.size());
  std::optional<int> limit;
  for (;;) {
    const std::string dir = mount->mountpoint + (relative == "/" ? "" : relative);
    if (const auto cpus = QuotaIn(read, dir, v2)) limit = std::min(limit.value_or(*cpus), *cpus);
    if (relative.empty() || relative == "/") break;
    const size_t slash = relative.rfind('/');
    relative = slash == 0 || slash == std::string::npos ? "/" : relative.substr(0, slash);
  }
  return limit;
}

}  // namespace

std::optional<int> CgroupCpuLimit(const FileReader& read) {
  const auto proc_cgroup = read("/proc/self/cgroup");
  const auto mountinfo = read("/proc/self/mountinfo");
  if (!proc_cgroup || !mountinfo) return std::nullopt;
  std::optional<int> limit;
  for (const bool v2 : {false, true}) {
    if (const auto cpus = LimitOf(read, *proc_cgroup, *mountinfo, v2)) {
      limit = std::min(limit.value_or(*cpus), *cpus);
    }
  }
  return limit;
}

int AffinityCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int UsableCpus() {
  int cpus = AffinityCpus();
  const FileReader read = [](const std::string& path) -> std::optional<std::string> {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream contents;
    contents << in.rdbuf();
    return contents.str();
  };
  if (const auto limit = CgroupCpuLimit(read)) cpus = std::min(cpus, *limit);
  return cpus;
}

}  // namespace masknet

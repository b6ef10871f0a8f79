#ifndef MASKNET_SERVER_CPU_BUDGET_H_
#define MASKNET_SERVER_CPU_BUDGET_H_

#include <functional>
#include <optional>
#include <string>

namespace masknet {

// Reads a whole file; nullopt when it cannot be read.
using FileReader = std::function<std::optional<std::string>(const std::string& path)>;

// The CPU quota of this process's cgroups (v1 cpu.cfs_quota_us /
// cpu.cfs_period_us, or v2 cpu.max), in CPUs rounded up, the smallest along
// the cgroup's path to the root of its hierarchy; nullopt when there is no
// quota. `read` reads /proc/self/cgroup, /proc/self/mountinfo and the
// cgroup files (tests pass a fake file system).
std::optional<int> CgroupCpuLimit(const FileReader& read);

// The CPUs in this process's affinity mask. At least 1.
int AffinityCpus();

// The CPUs this process may use: its affinity mask, capped by its cgroups'
// CPU quota. At least 1.
int UsableCpus();

}  // namespace masknet

#endif  // MASKNET_SERVER_CPU_BUDGET_H_

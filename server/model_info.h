#ifndef MASKNET_SERVER_MODEL_INFO_H_
#define MASKNET_SERVER_MODEL_INFO_H_

#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.pb.h"

namespace masknet {

// Describes a servable as GetModelInfo answers: its name and version, the
// context and candidate fields a request must send (widths, kinds, bounds),
// the tasks, size, precision, and the config's description and metadata.
serving::v1::ModelInfo DescribeModel(const Servable& servable);

}  // namespace masknet

#endif  // MASKNET_SERVER_MODEL_INFO_H_

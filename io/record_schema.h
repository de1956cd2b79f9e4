// What each record kind of a .qbin model may hold (docs/qbin-format.md), checked the same way by
// every loader: the runtime's (inference_model), training's (from_qbin, load_any_model) and so
// quantize's and train --init's. A file therefore means the same thing to every program: an
// attribute or tensor a kind does not take, a value out of its range, a missing attribute or a
// repeated one is refused before any loader reads the record.
//
//   qbin::check_record(record);   // throws qbin::FormatError: "layer 'conv2d' (Conv2D): ..."
//
// What depends on more than one record (shapes that chain, the file being f32 or int8, an
// activation record belonging to the layer before it) stays with each loader.
#pragma once

#include <string_view>

#include "io/qbin.h"

namespace qnet::qbin {

// Whether the kind is known, and checks the record against its kind's schema.
bool known_record_kind(std::string_view kind);
void check_record(const LayerRecord& record);

// The kinds that are the identity at inference (Dropout, GaussianNoise): the runtime skips them
// by kind; their records may carry training_only = 1, no other record may.
bool training_only_kind(std::string_view kind);

}  // namespace qnet::qbin

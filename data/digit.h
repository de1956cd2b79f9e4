// MNIST-style preparation of a photo or drawing of one digit, as the MNIST digits were made.
//
//   GrayImage img = read_png_gray("my_digit.png");
//   std::array<uint8_t, 784> x = prepare_digit(img);   // 28x28, white ink on black
//
// Steps: light backgrounds are inverted so the ink is white on black; the contrast is stretched
// from the background level (the median of the border) to the brightest ink; the image is cropped
// to the ink's bounding box, scaled by area averaging to fit 20x20 keeping its aspect ratio, and
// placed in 28x28 so that its centre of mass is at the centre (14, 14).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "data/png.h"

namespace qnet {

using Digit = std::array<uint8_t, 28 * 28>;

Digit prepare_digit(const GrayImage& image);  // throws ImageError for a blank image
Digit raw_digit(const GrayImage& image);      // a 28x28 image as it is (throws otherwise)

// A plain resize for models that do not take MNIST digits: the image scaled to width x height
// by area averaging (each output pixel the mean of the input area it covers), no inversion,
// cropping or centring. Row-major, one byte per pixel.
std::vector<uint8_t> resize_gray(const GrayImage& image, int width, int height);
// The same for an image of several interleaved channels, each resized on its own.
std::vector<uint8_t> resize_image(const Image& image, int width, int height);

// An MNIST digit (white on black, 28x28) as black ink on a white RGB canvas, enlarged 3x and
// placed off centre: what a user's photo or drawing looks like. width, height >= 84.
std::vector<uint8_t> ink_on_canvas(const uint8_t* digit, int width, int height);

}  // namespace qnet

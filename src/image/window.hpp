// Where the model's input comes from on a photo, and where its heatmap goes back.
#pragma once

namespace dermal {

// A rectangle of whole pixels on a picture.
struct PixelRect {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// A window of a resized picture: the part of the picture inside the source
// box is resized to resized_width x resized_height, and only width x height
// pixels from (left, top) of that are made.
struct ResizeWindow {
  int resized_width = 0;
  int resized_height = 0;
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
  // The source box in the picture's pixels: Pillow's `box` argument, which
  // Pillow holds as float. The whole picture unless the policy is "fit".
  float box_left = 0;
  float box_top = 0;
  float box_right = 0;
  float box_bottom = 0;

  // The part of the picture the window shows, in whole pixels: where a map
  // of the window lies on a picture_width x picture_height picture.
  PixelRect on_picture(int picture_width, int picture_height) const;
};

}  // namespace dermal

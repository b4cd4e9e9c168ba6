"""Appearance styles of the procedural hand renderer: one `Style` is one image domain.

`RENDER` is the labelled source domain (clean "rendered" look, depth and mask given); `CAPTURE` is
the unlabelled target domain ("captured" look: textured skin, clutter, occluders and sensor
effects). A new domain is a new `Style`: copy one with `dataclasses.replace` and change fields, then
build a dataset from it with `builders.synthetic_hands.config_from_style`.

Colours are RGB in [0, 1]; lengths in mm; pixel quantities at the rendered image size.
"""

from __future__ import annotations

import dataclasses

Range = tuple[float, float]
RGB = tuple[float, float, float]

# Skin tones from light to dark (roughly the Fitzpatrick range), RGB in [0, 1].
SKIN_TONES: tuple[RGB, ...] = (
    (0.95, 0.80, 0.69), (0.89, 0.70, 0.57), (0.80, 0.59, 0.45), (0.67, 0.47, 0.34),
    (0.50, 0.34, 0.24), (0.36, 0.24, 0.17),
)
# The target's tones: warmer and redder, with no very light and no very dark tone, so the two
# domains' colour distributions overlap only in part.
SKIN_TONES_SHIFTED: tuple[RGB, ...] = (
    (0.88, 0.62, 0.52), (0.80, 0.53, 0.42), (0.70, 0.46, 0.36), (0.58, 0.38, 0.29),
)


@dataclasses.dataclass(frozen=True)
class Style:
    """Everything that defines an image domain of the renderer.

    Attributes:
      name: short identifier (used in dataset config names).
      grasp_probability: chance of the grasp-like pose prior; otherwise the open/gesture prior.
      distance_range: depth (mm) of the root joint (middle MCP) in front of the camera.
      focal_range: focal length as a multiple of the image size (128 px image, 1.2 -> f = 154 px).
      scale_range: global hand-size factor relative to the template hand.
      proportion_std: standard deviation of per-phalanx length factors (finger proportions).
      skin_tones: palette a sample's skin colour is drawn from.
      tone_jitter: per-sample uniform jitter added to each channel of the drawn tone.
      skin_texture: amplitude of a multiplicative blotchy skin texture (0 = uniform skin).
      specular: strength of a Blinn-Phong highlight (0 = purely Lambertian).
      ambient_range: ambient light level; the rest is one directional light.
      background_texture_probability: chance the background is a texture (value noise or
        stripes) instead of a plain or smooth-gradient one.
      num_shapes: (min, max) flat shapes (ellipses, rectangles) drawn on the background.
      num_distractors: (min, max) skin-coloured blobs on the background.
      occluder_probability: chance of one or two objects partly covering the hand (they hide
        joints: visibility and mask account for them).
      sleeve_probability: chance the forearm wears a coloured sleeve instead of bare skin.
      noise_std: (min, max) Gaussian sensor noise, in [0, 1] intensity units.
      blur_sigma: (min, max) Gaussian blur in pixels (0 = sharp).
      motion_blur: (min, max) length in pixels of a linear motion blur in a random direction
        (below 1 px: none); (0, 0) draws nothing.
      resolution: (min, max) the sensor's resolution as a fraction of the image size: the image
        is recorded at that size (anti-aliased; the sensor noise is added there) and upsampled
        back, as a low-resolution camera or a digital zoom gives; (1, 1) draws nothing.
      colour_cast: maximum per-channel gain deviation of a global colour cast.
      exposure_range: global brightness gain.
      jpeg_quality: (min, max) JPEG quality of a re-encoding, or None for no compression.
      background_families: chance the background is drawn by `render.random_background` (one
        of several generic families layered with objects and defocus) instead of the fields
        above; 0 draws nothing new, so older styles keep their bytes.
      num_lights: (min, max) directional lights; a second light adds its own direction, colour
        tint and strength.
      light_tint: maximum per-channel deviation of each light's colour from white.
      thickness_range: a per-hand factor on every capsule radius (slender or broad hands).
      with_depth: the dataset stores metric depth.
      with_mask: the dataset stores the hand mask.
    """

    name: str
    grasp_probability: float = 0.2
    distance_range: Range = (300.0, 480.0)
    focal_range: Range = (1.0, 1.4)
    scale_range: Range = (0.85, 1.15)
    proportion_std: float = 0.05
    skin_tones: tuple[RGB, ...] = SKIN_TONES
    tone_jitter: float = 0.03
    skin_texture: float = 0.0
    specular: float = 0.0
    ambient_range: Range = (0.3, 0.45)
    background_texture_probability: float = 0.0
    num_shapes: tuple[int, int] = (0, 3)
    num_distractors: tuple[int, int] = (0, 0)
    occluder_probability: float = 0.0
    sleeve_probability: float = 0.0
    noise_std: Range = (0.0, 0.0)
    blur_sigma: Range = (0.0, 0.0)
    motion_blur: Range = (0.0, 0.0)
    resolution: Range = (1.0, 1.0)
    colour_cast: float = 0.0
    exposure_range: Range = (1.0, 1.0)
    jpeg_quality: tuple[int, int] | None = None
    background_families: float = 0.0
    num_lights: tuple[int, int] = (1, 1)
    light_tint: float = 0.0
    thickness_range: Range = (1.0, 1.0)
    with_depth: bool = True
    with_mask: bool = True

    def __post_init__(self):
        for field in ("distance_range", "focal_range", "scale_range", "ambient_range",
                      "noise_std", "blur_sigma", "exposure_range", "num_shapes",
                      "num_distractors", "motion_blur", "resolution", "num_lights",
                      "thickness_range"):
            lo, hi = getattr(self, field)
            if lo > hi:
                raise ValueError(f"Style {self.name!r}: {field} = {(lo, hi)} has min > max")
        if self.distance_range[0] <= 100.0:
            raise ValueError(f"Style {self.name!r}: distance_range must stay beyond 100 mm")
        if not (0.0 < self.resolution[0] and self.resolution[1] <= 1.0):
            raise ValueError(f"Style {self.name!r}: resolution = {self.resolution} must lie in "
                             "(0, 1] (a fraction of the image size)")
        if self.motion_blur[0] < 0.0:
            raise ValueError(f"Style {self.name!r}: motion_blur = {self.motion_blur} must be >= 0")
        if not self.skin_tones:
            raise ValueError(f"Style {self.name!r}: skin_tones is empty; give at least one RGB")
        for field in ("grasp_probability", "background_texture_probability",
                      "occluder_probability", "sleeve_probability", "background_families"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"Style {self.name!r}: {field} must be a probability in [0, 1]")


#: Labelled source: Lambertian shading, one light, uniform skin, plain/gradient backgrounds with a
#: few flat shapes, no sensor effects; depth and mask.
RENDER = Style(name="render")

#: Unlabelled target: textured skin with shifted tones, highlights and ambient changes, cluttered
#: textured backgrounds with skin-coloured distractors, occluders, sensor noise, blur, colour
#: cast and JPEG; mostly grasp-like poses at a different distance range; RGB only.
CAPTURE = Style(
    name="capture",
    grasp_probability=0.7,
    distance_range=(250.0, 600.0),
    focal_range=(0.9, 1.5),
    skin_tones=SKIN_TONES_SHIFTED,
    tone_jitter=0.06,
    skin_texture=0.18,
    specular=0.35,
    ambient_range=(0.15, 0.6),
    background_texture_probability=0.9,
    num_shapes=(1, 4),
    num_distractors=(1, 3),
    occluder_probability=0.35,
    sleeve_probability=0.5,
    noise_std=(0.01, 0.04),
    blur_sigma=(0.3, 1.1),
    colour_cast=0.12,
    exposure_range=(0.75, 1.2),
    jpeg_quality=(35, 80),
    with_depth=False,
    with_mask=False,
)

#: Labelled source randomised for transfer to photographs nobody has seen (domain randomisation,
#: as Tobin et al. 2017 and Tremblay et al. 2018 use it): backgrounds from many families with
#: objects, skin-coloured ones among them (other people's skin is in most hand photos), broad
#: skin tones with texture and highlights, one or two tinted lights, forearms bare or sleeved in
#: any colour, occluding objects, slender to broad hands, and a camera's defocus, noise, colour
#: balance, exposure and JPEG. Ranges are wide on purpose: nothing in it is fitted to a target
#: (neither to `CAPTURE` nor to any set of photographs); depth and mask as `RENDER`.
RANDOMIZED = Style(
    name="randomized",
    grasp_probability=0.4,
    scale_range=(0.8, 1.2),
    proportion_std=0.07,
    tone_jitter=0.08,
    skin_texture=0.15,
    specular=0.3,
    ambient_range=(0.1, 0.7),
    background_families=1.0,
    num_shapes=(2, 9),
    num_distractors=(0, 2),
    occluder_probability=0.3,
    sleeve_probability=0.5,
    noise_std=(0.0, 0.05),
    blur_sigma=(0.0, 1.5),
    colour_cast=0.15,
    exposure_range=(0.6, 1.3),
    jpeg_quality=(30, 95),
    num_lights=(1, 2),
    light_tint=0.15,
    thickness_range=(0.85, 1.2),
)

STYLES = {s.name: s for s in (RENDER, CAPTURE, RANDOMIZED)}

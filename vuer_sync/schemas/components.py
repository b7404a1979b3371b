"""The component catalogue of vuer 0.1.6: same class names, same tags.

Most components differ only in their tag (and sometimes a class-default key), so
they are generated from :data:`CATALOGUE`. Real classes exist only where the
wire encoding differs: images (:class:`Img` and the scene classes built on it),
:class:`PointCloud`, :class:`TriMesh`, text spans, and the few constructors that
always send default props (``MotionControllers``, ``WebXRMesh``, ``Billboard``,
``Text3D``, ``BackgroundColor``, ``BBox``). ``Scene`` and ``DefaultScene`` live in
:mod:`vuer_sync.schemas.scene`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type

from .base import BlockElement, Element, ModelNode, SceneElement
from .encoding import encode_image, float16_bytes, rgb_bytes, uint32_bytes

# --------------------------------------------------------------------------- table
# One row per generated class: name, tag ("=" means same as the name), base class,
# and the vuer 0.1.6 module it comes from (html, scene, drei, material, physics,
# vuer). Material tags are the class name with a lower-case first letter ("~").
_TABLE = """
Iframe iframe BlockElement html
AutoScroll = BlockElement html
Markdown = BlockElement html
Page article BlockElement html
div Div BlockElement html
Header1 h1 BlockElement html
Header2 h2 Header1 html
Header3 h3 Header1 html
Paragraph p BlockElement html
InputBox Input Element html
Button = Element html
Slider = Element html

Frustum = SceneElement scene
PerspectiveFrustum = SceneElement scene
FisheyeFrustum = SceneElement scene
OrthographicFrustum = SceneElement scene
CameraHelper = SceneElement scene
group group SceneElement scene
mesh mesh SceneElement scene
Box = SceneElement scene
Capsule = SceneElement scene
Cone = SceneElement scene
Circle = SceneElement scene
Cylinder = SceneElement scene
Dodecahedron = SceneElement scene
Edges = SceneElement scene
Extrude = SceneElement scene
Icosahedron = SceneElement scene
Lathe = SceneElement scene
Octahedron = SceneElement scene
Plane = SceneElement scene
Polyhedron = SceneElement scene
Ring = SceneElement scene
Shape = SceneElement scene
Sphere = SceneElement scene
Tetrahedron = SceneElement scene
Torus = SceneElement scene
TorusKnot = SceneElement scene
Tube = SceneElement scene
Wireframe = SceneElement scene
LumaSplats Splats SceneElement scene
SparkSplats = SceneElement scene
Pcd = SceneElement scene
CameraView = SceneElement scene
HUDPlane = SceneElement scene
WebRTCVideoPlane = SceneElement scene
WebRTCStereoVideoPlane = SceneElement scene
Group VuerGroup SceneElement scene
HemisphereLight = SceneElement scene
HemisphereLightStage = SceneElement scene
RectAreaLight = SceneElement scene
Stage = SceneElement scene
Gamepad = SceneElement scene
KeyboardMonitor = SceneElement scene
DirectionalLight = SceneElement scene
PointLight = SceneElement scene
SpotLight = SceneElement scene
AmbientLight = SceneElement scene
Pivot = SceneElement scene
Movable = SceneElement scene
Clickable = SceneElement scene
Hands = SceneElement scene
Body = SceneElement scene
Head = SceneElement scene
Obj = ModelNode scene
Fbx = ModelNode scene
Stl = ModelNode scene
Dae = ModelNode scene
Ply = ModelNode scene
Glb = ModelNode scene
Bvh = ModelNode scene
Urdf = ModelNode scene
CoordsMarker = SceneElement scene
Arrow = SceneElement scene
Gripper = SceneElement scene
SkeletalGripper = SceneElement scene
Grid = SceneElement scene
GrabRender = SceneElement scene
ViewportHud = SceneElement scene
TimelineControls = SceneElement scene
PointerControls = SceneElement scene
RandomizedLight = SceneElement scene
AccumulativeShadows = SceneElement scene
Trail = SceneElement scene
Center = SceneElement scene
Text = SceneElement scene
VuerSplat = SceneElement scene
VuerGroup = SceneElement scene
BoundingBox = SceneElement scene
BoundingBoxProvider = SceneElement scene
DepthPointCloud = SceneElement scene
DepthPointCloudProvider = SceneElement scene
InPlaceDepthPointCloud = SceneElement scene
SceneCamera = SceneElement scene
SceneCameraControl = SceneElement scene
AmbientLightStage = SceneElement scene
CameraPreviewThumbs = SceneElement scene
CameraPreviewOverlay = SceneElement scene
AnimationClip = SceneElement scene
VectorTrack = SceneElement scene
QuaternionTrack = SceneElement scene
ThreeAnimate = SceneElement scene
PlaybackAnimate = SceneElement scene

Html = SceneElement drei
Splat = SceneElement drei
Line = SceneElement drei
QuadraticBezierLine = SceneElement drei
CubicBezierLine = SceneElement drei
CatmullRomLine = SceneElement drei
Facemesh = SceneElement drei
OrbitControls = SceneElement drei
PerspectiveCamera = SceneElement drei
OrthographicCamera = SceneElement drei
SimplePerspectiveCamera = SceneElement drei
SimpleOrthographicCamera = SceneElement drei
FisheyeCamera = SceneElement drei

LineBasicMaterial ~ Element material
LineDashedMaterial ~ Element material
Material ~ Element material
MeshBasicMaterial ~ Element material
MeshDepthMaterial ~ Element material
MeshDistanceMaterial ~ Element material
MeshLambertMaterial ~ Element material
MeshMatcapMaterial ~ Element material
MeshNormalMaterial ~ Element material
MeshPhongMaterial ~ Element material
MeshPhysicalMaterial ~ Element material
MeshStandardMaterial ~ Element material
MeshToonMaterial ~ Element material
PointsMaterial ~ Element material
RawShaderMaterial ~ Element material
ShaderMaterial ~ Element material
ShadowMaterial ~ Element material
SpriteMaterial ~ Element material

MuJoCoProvider = SceneElement physics
MuJoCo = SceneElement physics
HandActuator = SceneElement physics
MotionControllerActuator = SceneElement physics
MjCameraView = SceneElement physics

ContribLoader = SceneElement vuer
"""

#: class-default keys (used when no ``key=`` is given)
CLASS_KEYS: Dict[str, str] = {
    "Hands": "hands",
    "Body": "body_tracking",
    "Head": "head_tracking",
    "GrabRender": "DEFAULT",
    "OrbitControls": "orbit-controls",
    "PerspectiveCamera": "perspective-camera",
    "OrthographicCamera": "orthographic-camera",
    "FisheyeCamera": "fisheye-camera",
}

#: class attributes that vuer declares as documentation of the web client's own
#: defaults. They are readable on the class but, as in vuer, never sent.
CLASS_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "Movable": {"localRotation": False},
    "Hands": dict(stream=True, disableLeft=False, disableRight=False, hideLeft=False,
                  hideRight=False),
    "Body": dict(stream=True, leftHand=False, rightHand=False, fps=30, showBody=True,
                 showFrame=True, frameScale=0.02),
    "Head": dict(stream=True, fps=30, show=False, frameScale=0.05),
    "MuJoCo": dict(workDir=None, assets=[], speed=1.0, pause=False, fps=60, timeout=0.0,
                   threshold=0.001, keyFrames=[], visibile=None, selfProvide=True,
                   useLights=True, useMocap=True, gizmoScale=0.3, unpauseOnDrag=False,
                   dragForceScale=1.0, showDragArrow=True, showDragForceText=True),
    "HandActuator": dict(ctrlId=-1, offset=0.01, low=0.01, high=1.0, cond="right-squeeze",
                         value="right:thumb-tip,right:index-finger-tip", scale=1.0),
    "MotionControllerActuator": dict(ctrlId=-1, low=0.0, high=1.0, cond="right-trigger",
                                     scale=1.0),
    "MjCameraView": dict(movable=True, showCameraFrustum=True),
    "ContribLoader": dict(url=None, library=None, version="latest", main="dist/index.js",
                          dev=False),
}

#: name -> vuer 0.1.6 module (html, scene, drei, material, physics, vuer), for docs
SOURCE_MODULE: Dict[str, str] = {}

_BASES: Dict[str, Type[Element]] = {
    "Element": Element, "BlockElement": BlockElement,
    "SceneElement": SceneElement, "ModelNode": ModelNode,
}


def _make(name: str, tag: str, base: Type[Element], module: str) -> Type[Element]:
    attrs: Dict[str, Any] = {
        "tag": tag,
        "__module__": "vuer_sync.schemas",
        "__qualname__": name,
        "__doc__": f"Vuer component ``{tag}`` (vuer 0.1.6 ``{module}`` components).",
    }
    if name in CLASS_KEYS:
        attrs["key"] = CLASS_KEYS[name]
    attrs.update(CLASS_DEFAULTS.get(name, {}))
    return type(name, (base,), attrs)


GENERATED: Dict[str, Type[Element]] = {}
for _row in _TABLE.strip().splitlines():
    if not _row.strip():
        continue
    _name, _tag, _base, _module = _row.split()
    if _tag == "=":
        _tag = _name
    elif _tag == "~":
        _tag = _name[0].lower() + _name[1:]
    GENERATED[_name] = _make(_name, _tag, GENERATED.get(_base) or _BASES[_base], _module)
    SOURCE_MODULE[_name] = _module
globals().update(GENERATED)

Header = GENERATED["Header1"]


# --------------------------------------------------------------------------- text spans
class span(Element):
    """Inline text: ``span("hello", "world", sep=" ")`` sends ``text="hello world"``."""

    tag = "Span"
    _style: Optional[Dict[str, Any]] = None  # merged under a user ``style=`` prop

    def __init__(self, *text: str, sep: str = " ", key: Optional[str] = None, **props: Any):
        self.text = sep.join(text)  # set first: vuer sends "text" before "key"
        super().__init__(key=key, **props)

    def __post_init__(self, **kwargs: Any) -> None:
        if self._style is not None:
            self.style = {**self._style, **(self.__dict__.get("style") or {})}


class Bold(span):
    """Bold text span."""

    _style = {"fontWeight": "bold"}


class Italic(span):
    """Italic text span."""

    _style = {"fontStyle": "italic"}


class Link(span):
    """Hyperlink (``<a>``); pass ``href=``."""

    tag = "a"


# --------------------------------------------------------------------------- images
class Img(Element):
    """An image: ``Img(data, *, src=None, format="png", quality=None, key=None, **props)``.

    ``data`` is an ``(H, W[, C])`` array (uint8, or floats in [0, 1]), a PIL image
    or a file path, and is sent as binary PNG/JPEG in ``src``;
    ``format="b64png"``/``"b64jpeg"`` sends a data-URL string instead. ``src=`` (a
    URL or already-encoded bytes) is sent as is. The size is kept in the private
    ``_width``/``_height`` attributes, which are not sent.

    >>> import numpy as np
    >>> el = Img(np.zeros((4, 6, 3), np.uint8), key="img")
    >>> el.serialize()["src"][:4], (el._width, el._height)
    (b'\\x89PNG', (6, 4))
    """

    tag = "Img"

    def __init__(self, data: Any = None, *, src: Any = None, format: str = "png",
                 quality: Optional[int] = None, key: Optional[str] = None, **props: Any):
        if src is not None and data is not None:
            raise ValueError("pass either image data or src=, not both")
        head: Dict[str, Any] = {}
        if data is not None and not (isinstance(data, list) and not data):
            src, width, height = encode_image(data, format, quality)
            head = {"src": src}
            if width is not None:
                head.update(_width=width, _height=height)
        elif src is not None:
            head = {"src": src}
        super().__init__(key=key, **head, **props)


def _make_image_class(name: str, doc: str) -> Type[Element]:
    return type(name, (Img, SceneElement), {
        "tag": name, "__module__": "vuer_sync.schemas", "__qualname__": name,
        "__doc__": f"{doc} Takes the same image arguments as :class:`Img`.",
    })


SceneBackground = _make_image_class(
    "SceneBackground", "Static scene background (three.js ``scene.background``).")
ImageBackground = _make_image_class(
    "ImageBackground", "Camera-facing background plane, for high-rate images/video.")
VideoMaterial = _make_image_class("VideoMaterial", "Material playing a video from ``src``.")
WebRTCVideoMaterial = _make_image_class(
    "WebRTCVideoMaterial", "Material showing a WebRTC ``stream``.")
VideoPlane = _make_image_class("VideoPlane", "Camera-facing plane playing a video.")
StereoVideoPlane = _make_image_class(
    "StereoVideoPlane", "Camera-facing plane playing a stereo (side-by-side) video.")


class Image(Img, SceneElement):
    """An image on a plane in 3D space.

    The encoded image is sent as ``rgb`` (not ``src``); unless given, ``aspect``
    (width / height) and ``height`` (pixels * 0.001) are derived from the image.
    """

    tag = "Image"

    def __post_init__(self, **kwargs: Any) -> None:
        d = self.__dict__
        if d.get("src") is not None:
            d["rgb"] = d.pop("src")
        width, height = d.get("_width"), d.get("_height")
        if width is not None and height is not None:
            if d.get("aspect") is None:
                d["aspect"] = width / height
            if d.get("height") is None:
                d["height"] = height * 0.001


# --------------------------------------------------------------------------- geometry
class PointCloud(SceneElement):
    """A point cloud, sent as compact binary buffers.

    ``vertices`` (N, 3) -> little-endian float16 bytes; ``colors`` (N, 3|4) ->
    uint8 RGB bytes (alpha dropped, floats in [0, 1] scaled by 255). Arrays are
    not modified. Already-encoded ``bytes`` pass through.

    >>> import numpy as np
    >>> pc = PointCloud(vertices=np.zeros((2, 3)), colors=np.ones((2, 3)), key="pc", size=0.01)
    >>> d = pc.serialize()
    >>> len(d["vertices"]), d["colors"]
    (12, b'\\xff\\xff\\xff\\xff\\xff\\xff')
    """

    tag = "PointCloud"
    vertices = colors = None  # class defaults, as in vuer (never sent)

    def __post_init__(self, **kwargs: Any) -> None:
        _encode(self, vertices=float16_bytes, colors=rgb_bytes)


p = PointCloud


class TriMesh(SceneElement):
    """A triangle mesh: ``vertices``/``uv`` -> float16 bytes, ``faces`` -> uint32
    bytes, ``colors`` -> uint8 RGB bytes (as :class:`PointCloud`)."""

    tag = "TriMesh"
    vertices = faces = colors = uv = None  # class defaults, as in vuer (never sent)

    def __post_init__(self, **kwargs: Any) -> None:
        _encode(self, vertices=float16_bytes, faces=uint32_bytes, colors=rgb_bytes,
                uv=float16_bytes)


def _encode(el: Element, **encoders: Any) -> None:
    d = el.__dict__
    for name, fn in encoders.items():
        if d.get(name) is not None:
            d[name] = fn(d[name])


class Fog(SceneElement):
    """Scene fog: ``Fog(color="green", near=3, far=7)``. Takes no children."""

    tag = "fog"
    key = "fog"
    attach = "fog"

    def __post_init__(self, **kwargs: Any) -> None:
        if self.children:
            raise TypeError("Fog does not support children")


# --------------------------------------------------------------------------- constructors
# with props that are always sent (the defaults are part of the wire form)
class MotionControllers(SceneElement):
    """WebXR motion controllers; streams controller events when ``stream=True``."""

    tag = "MotionControllers"
    key = "motionControllers"

    def __init__(self, key: Optional[str] = "motionControllers",
                 eventTypes: Any = ("trigger", "squeeze"), stream: bool = True,
                 left: Any = None, right: Any = None, **props: Any):
        super().__init__(key=key, eventTypes=eventTypes, stream=stream, left=left,
                         right=right, **props)


class WebXRMesh(SceneElement):
    """WebXR detected meshes (answers ``GET_WEBXR_MESH``)."""

    tag = "WebXRMesh"
    key = "webxr-mesh"

    def __init__(self, key: Optional[str] = "webxr-mesh", color: Any = None,
                 opacity: float = 0.15, autoUpdate: bool = True, **props: Any):
        super().__init__(key=key, color=color, opacity=opacity, autoUpdate=autoUpdate,
                         **props)


class Billboard(SceneElement):
    """Children that always face the camera."""

    tag = "Billboard"

    def __init__(self, *children: Any, follow: bool = True, lockX: bool = False,
                 lockY: bool = False, lockZ: bool = False, **props: Any):
        super().__init__(*children, follow=follow, lockX=lockX, lockY=lockY, lockZ=lockZ,
                         **props)


class Text3D(SceneElement):
    """Extruded 3D text; positional strings are the text (sent as children)."""

    tag = "Text3D"

    def __init__(self, *text: Any, font: Any = None, smooth: Any = None,
                 lineHeight: float = 0, letterSpacing: float = 1, **props: Any):
        super().__init__(*text, font=font, smooth=smooth, lineHeight=lineHeight,
                         letterSpacing=letterSpacing, **props)


class BackgroundColor(SceneElement):
    """Solid scene background color."""

    tag = "BackgroundColor"

    def __init__(self, color: Any = "#131416", **props: Any):
        super().__init__(color=color, **props)


class BBox(SceneElement):
    """Axis-aligned bounding box between ``min`` and ``max`` (``{"x","y","z"}`` dicts)."""

    tag = "BBox"

    def __init__(self, min: Any = None, max: Any = None, color: Any = "0xffffff",
                 scale: float = 1.01, **props: Any):
        if min is None:
            min = {"x": -1, "y": -1, "z": -1}
        if max is None:
            max = {"x": 1, "y": 1, "z": 1}
        super().__init__(min=min, max=max, color=color, scale=scale, **props)


SPECIAL: Dict[str, str] = {
    "span": "html", "Bold": "html", "Italic": "html", "Link": "html", "Img": "html",
    "SceneBackground": "scene", "ImageBackground": "scene", "VideoMaterial": "scene",
    "WebRTCVideoMaterial": "scene", "VideoPlane": "scene", "StereoVideoPlane": "scene",
    "Image": "scene", "PointCloud": "scene", "TriMesh": "scene", "Fog": "scene",
    "MotionControllers": "scene", "WebXRMesh": "scene", "Billboard": "scene",
    "Text3D": "scene", "BackgroundColor": "scene", "BBox": "scene",
}
SOURCE_MODULE.update(SPECIAL)
SOURCE_MODULE.update({"Element": "html", "BlockElement": "html", "SceneElement": "scene",
                      "ModelNode": "scene"})

#: every component name exported by this module (aliases ``Header`` and ``p`` included)
COMPONENTS: Tuple[str, ...] = (*GENERATED, *SPECIAL, "Header", "p")

__all__: List[str] = list(COMPONENTS)  # generated: see _TABLE


def _catalogue() -> Dict[str, Type[Element]]:
    g = globals()
    return {n: g[n] for n in COMPONENTS}


#: name -> class for every component above
CATALOGUE: Dict[str, Type[Element]] = _catalogue()

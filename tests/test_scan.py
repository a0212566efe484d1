"""Scans in: NIfTI, TIFF and DICOM read into one coronal orientation, with spacing and HU."""

import json

import numpy as np
import pytest

from femsr import cli, dataset, scan
from femsr.defaults import BLURRY_SCAN_NOISE_HU, DEBLURRED_MODEL_MAX_FWHM
from femsr.femur import Femur
from femsr.io import FemurImage

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("tifffile")

# A coronal image in femsr's orientation (rows superior to inferior, columns patient right to
# left) that tells every flip apart; bone (1200 HU) in its top-left corner.
IMAGE = 2.0 * np.arange(6 * 8).reshape(6, 8)  # even: DICOM stores (HU + 1024) / 2
IMAGE[:2, :3] = 1200.0


def test_density_from_hu_is_the_stated_linear_calibration():
    hu = np.array([-50.0, 0.0, 450.0, 1800.0, 3000.0])
    assert scan.density_from_hu(hu).tolist() == [0.0, 0.0, 0.25, 1.0, 1.0]
    calibrated = scan.density_from_hu(hu, marrow=-50.0, tissue=1950.0)
    assert calibrated[2] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="must exceed"):
        scan.density_from_hu(hu, marrow=100.0, tissue=100.0)


@pytest.mark.parametrize("suffix", [".nii.gz", ".tif"])
def test_written_scans_read_back_with_their_spacing(tmp_path, suffix):
    path = tmp_path / f"slice{suffix}"
    scan.write_scan(path, scan.Scan(IMAGE, (0.6, 0.4), "HU"))
    found = scan.read_scan(path)
    np.testing.assert_allclose(found.image, IMAGE)
    assert found.spacing == pytest.approx((0.6, 0.4))


def test_density_images_record_their_pixel_size(tmp_path, left_scan, network_inputs):
    from PIL import Image

    from femsr import io

    io.write_image(tmp_path / "d.tif", np.full((4, 6), 0.5), pixel_size=0.05)
    assert scan.read_scan(tmp_path / "d.tif").spacing == pytest.approx((0.05, 0.05))
    io.write_image(tmp_path / "d.png", np.full((4, 6), 0.5), pixel_size=0.05)
    with Image.open(tmp_path / "d.png") as png:
        assert png.info["dpi"] == pytest.approx((508.0, 508.0), rel=1e-4)
    with pytest.raises(ValueError, match="pixel_size must be a positive number of mm"):
        io.write_image(tmp_path / "e.png", np.zeros((2, 2)), pixel_size=0.0)
    scan.write_scan(tmp_path / "scan.nii.gz", left_scan[1])  # its HR image as TIFF: 50 µm
    assert cli.main(["reconstruct", str(tmp_path / "scan.nii.gz"), str(tmp_path / "hr.tif")]) == 0
    hr = scan.read_scan(tmp_path / "hr.tif")
    assert hr.image.shape == (2080, 1890) and hr.spacing == pytest.approx((0.05, 0.05))


def test_a_written_nifti_slice_keeps_its_place(tmp_path):
    path = tmp_path / "slice.nii.gz"
    scan.write_scan(path, scan.Scan(IMAGE, (0.6, 0.4), "HU"))
    default = scan.read_scan(path).affine
    # the top-left pixel's centre at the origin, rows down to the feet, columns to the left
    np.testing.assert_allclose(default @ [0.2, 0.3, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(default @ [0.2, 1.3, 0.0, 1.0], [0.0, 0.0, -1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(default @ [1.2, 0.3, 0.0, 1.0], [-1.0, 0.0, 0.0, 1.0], atol=1e-6)
    # turned by 5° in the coronal plane, 2 mm thick, shifted
    c, s = np.cos(np.radians(5.0)), np.sin(np.radians(5.0))
    placed = np.array(
        [[-c, s, 0.0, 12.0], [0.0, 0.0, -2.0, -40.0], [-s, -c, 0.0, 7.5], [0.0, 0.0, 0.0, 1.0]]
    )
    scan.write_scan(path, scan.Scan(IMAGE, (0.6, 0.4), "HU", affine=placed))
    found = scan.read_scan(path)
    np.testing.assert_allclose(found.image, IMAGE)
    np.testing.assert_allclose(found.affine, placed, atol=1e-5)


def ras_volume(affine_axes, flips, depth=5, at=3):
    """IMAGE as slice ``at`` of a volume whose voxel axes are ``affine_axes`` (a permutation
    of RAS x, y, z) with ``flips`` (+1 or -1 per voxel axis), and its affine."""
    ny, nx = IMAGE.shape
    canonical = np.zeros((nx, depth, ny))  # i: x, j: y, k: z, all increasing (RAS)
    # Columns run right to left (-x), rows superior to inferior (-z); slice at+... anterior.
    canonical[:, at, :] = IMAGE[::-1, ::-1].T
    volume = np.transpose(canonical, affine_axes)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    steps = {0: 0.4, 1: 1.0, 2: 0.6}
    for k, axis in enumerate(affine_axes):
        if flips[k] < 0:
            volume = np.flip(volume, axis=k)
        affine[axis, k] = flips[k] * steps[axis]
    return volume, affine


@pytest.mark.parametrize(
    ("axes", "flips"), [((0, 1, 2), (1, 1, 1)), ((2, 0, 1), (-1, 1, -1)), ((1, 2, 0), (1, -1, -1))]
)
def test_a_volume_gives_its_boniest_coronal_slice_in_one_orientation(tmp_path, axes, flips):
    volume, affine = ras_volume(axes, flips)
    affine[:3, 3] = [10.0, -20.0, 30.0]
    path = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(volume, affine), path)
    found = scan.read_scan(path)
    np.testing.assert_allclose(found.image, IMAGE)
    assert found.spacing == pytest.approx((0.6, 0.4))
    # placed where the volume's affine has each pixel (IMAGE's values, outside its bone corner,
    # are unique)
    for r, c in [(0, 7), (5, 0), (5, 7), (3, 4)]:
        voxel = np.argwhere(volume == IMAGE[r, c])[0]
        at = found.affine @ [(c + 0.5) * 0.4, (r + 0.5) * 0.6, 0.0, 1.0]
        np.testing.assert_allclose(at, affine @ [*voxel, 1.0], atol=1e-12)
    assert found.index == 5 - 1 - 3  # numbered from the front: the slice at y index 3 of 5
    np.testing.assert_allclose(scan.read_scan(path, index=found.index).image, IMAGE)
    with pytest.raises(ValueError, match="outside the 5 coronal slices"):
        scan.read_scan(path, index=5)


def test_bad_scans_are_named(tmp_path):
    axial = tmp_path / "axial.nii"
    nib.save(nib.Nifti1Image(IMAGE.T[:, :, None], np.diag([0.5, 0.5, 1.0, 1.0])), axial)
    with pytest.raises(ValueError, match="axial image; femsr needs a coronal one"):
        scan.read_scan(axial)
    empty = tmp_path / "empty.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 5)), np.eye(4)), empty)
    with pytest.raises(ValueError, match="no femur"):
        scan.read_scan(empty)
    oblique = tmp_path / "oblique.nii"
    turn = np.eye(4)
    turn[:2, :2] = [[0.7, -0.7], [0.7, 0.7]]
    nib.save(nib.Nifti1Image(np.ones((4, 3, 5)) * 500, turn), oblique)
    with pytest.raises(ValueError, match="oblique"):
        scan.read_scan(oblique)
    import tifffile

    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, IMAGE.astype(np.float32))
    with pytest.raises(ValueError, match="no pixel spacing"):
        scan.read_scan(bare)
    assert scan.read_scan(bare, spacing=(0.5, 0.5)).spacing == (0.5, 0.5)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a scan")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        scan.read_scan(junk)
    with pytest.raises(FileNotFoundError):
        scan.read_scan(tmp_path / "missing.dcm")


def dicom_slice(
    path,
    stored,
    orientation,
    position,
    slope=2.0,
    intercept=-1024.0,
    series=None,
    jpeg=False,
    spacing=(0.6, 0.4),
):
    """A CT slice (``stored``: one frame, or frames stacked) in one DICOM file, of ``series`` if
    given; ``jpeg``: its pixel data said to be JPEG 2000, and undecodable."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if jpeg else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "CT"
    if series is not None:
        ds.SeriesInstanceUID = series
    if stored.ndim == 3:
        ds.NumberOfFrames = len(stored)
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = list(spacing)
    ds.ImageOrientationPatient = orientation
    ds.ImagePositionPatient = position
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = encapsulate([b"\0" * 16]) if jpeg else stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_a_dicom_series_gives_hounsfield_units_in_the_coronal_orientation(tmp_path):
    stored = (IMAGE + 1024.0) / 2.0  # HU = 2 stored - 1024
    # Coronal, displayed as radiologists do: along a row towards the patient's left (+x in
    # DICOM's LPS), down a column towards the feet (-z); slices stacked front to back (+y).
    coronal = [1, 0, 0, 0, 0, -1]
    for k, y in enumerate([3.0, 0.0, 6.0]):  # written out of order
        image = stored if y == 3.0 else np.zeros_like(stored)
        dicom_slice(tmp_path / f"s{k}.dcm", image, coronal, [0.0, y, 0.0])
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    found = scan.read_scan(tmp_path)
    assert found.unit == "HU" and found.index == 1  # the middle of three, from the front
    np.testing.assert_allclose(found.image, IMAGE)
    assert found.spacing == pytest.approx((0.6, 0.4))
    # pixel (r, c) lies at (0.4 c, 3, -0.6 r) in DICOM's LPS, so in RAS:
    for r, c in [(0, 0), (5, 7), (2, 3)]:
        at = found.affine @ [(c + 0.5) * 0.4, (r + 0.5) * 0.6, 0.0, 1.0]
        np.testing.assert_allclose(at, [-0.4 * c, -3.0, -0.6 * r, 1.0], atol=1e-12)
    single = scan.read_scan(tmp_path / "s0.dcm")
    np.testing.assert_allclose(single.image, IMAGE)
    axial = tmp_path / "axial"
    axial.mkdir()
    dicom_slice(axial / "a.dcm", stored, [1, 0, 0, 0, 1, 0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="axial image"):
        scan.read_scan(axial / "a.dcm")


def test_an_enhanced_dicom_file_reads_as_its_series(tmp_path):
    """One multi-frame file, its geometry and rescaling in functional groups, shared and per
    frame, as the series above."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def group(**values):
        item = Dataset()
        for key, value in values.items():
            setattr(item, key, value)
        return Sequence([item])

    stored = (IMAGE + 1024.0) / 2.0
    positions = [3.0, 0.0, 6.0]  # written out of order
    frames = [stored if y == 3.0 else np.zeros_like(stored) for y in positions]
    path = tmp_path / "enhanced.dcm"
    dicom_slice(path, np.stack(frames), [1, 0, 0, 0, 0, -1], [0.0, 0.0, 0.0])
    ds = pydicom.dcmread(path)
    moved = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "RescaleSlope")
    for key in (*moved, "RescaleIntercept"):  # into the functional groups
        delattr(ds, key)
    shared = Dataset()
    shared.PixelValueTransformationSequence = group(RescaleSlope=2.0, RescaleIntercept=-1024.0)
    shared.PixelMeasuresSequence = group(PixelSpacing=[0.6, 0.4])
    shared.PlaneOrientationSequence = group(ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for y in positions:
        item = Dataset()
        item.PlanePositionSequence = group(ImagePositionPatient=[0.0, y, 0.0])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.save_as(path, enforce_file_format=True)
    found = scan.read_scan(path)
    assert found.unit == "HU" and found.index == 1
    np.testing.assert_allclose(found.image, IMAGE)
    assert found.spacing == pytest.approx((0.6, 0.4))
    at = found.affine @ [(7 + 0.5) * 0.4, (5 + 0.5) * 0.6, 0.0, 1.0]
    np.testing.assert_allclose(at, [-0.4 * 7, -3.0, -0.6 * 5, 1.0], atol=1e-12)


def test_dicom_files_femsr_cannot_read_are_named(tmp_path):
    stored = (IMAGE + 1024.0) / 2.0
    coronal = [1, 0, 0, 0, 0, -1]
    (tmp_path / "two").mkdir()
    for k in range(2):
        dicom_slice(tmp_path / "two" / f"s{k}.dcm", stored, coronal, [0, k, 0], series=f"1.2.{k}")
    with pytest.raises(ValueError, match="holds 2 DICOM series; give the folder"):
        scan.read_scan(tmp_path / "two")
    dicom_slice(tmp_path / "jpeg.dcm", stored, coronal, [0, 0, 0], jpeg=True)
    with pytest.raises(ValueError, match=r"jpeg\.dcm': its pixel data cannot be decoded"):
        scan.read_scan(tmp_path / "jpeg.dcm")


def test_segment_finds_the_phantom_femur_and_refuses_a_cut_one():
    femur = Femur()
    mask = femur.mask(0.5)
    mask_trabecular = mask & ~femur.compartments(0.5)[1]
    # A clinical-looking image: a solid cortex, trabeculae of density 0.35 with marrow holes,
    # soft tissue at 0.05 around it.
    rng = np.random.default_rng(0)
    density = np.where(mask, 1.0, 0.05)
    density[mask_trabecular] = np.where(rng.random(mask_trabecular.sum()) < 0.7, 0.35, 0.1)
    found = scan.segment(density, spacing=0.5)
    assert (found == mask).mean() > 0.995
    # beside a larger bone that does not reach the bottom edge, as a pelvis would lie
    rows, cols = np.mgrid[: mask.shape[0], : mask.shape[1] + 200]
    pelvis = np.hypot((rows - 100) / 88, (cols - mask.shape[1] - 100) / 90) < 1
    assert pelvis.sum() > mask.sum()
    beside = np.pad(density, ((0, 0), (0, 200)), constant_values=0.05)
    beside[pelvis] = 1.0
    assert (scan.segment(beside, spacing=0.5)[:, : mask.shape[1]] == mask).mean() > 0.995
    assert not scan.segment(beside, spacing=0.5)[pelvis].any()
    # both femurs of a slice: the patient's right one on the image's left
    both = np.hstack([density, density[:, ::-1]])
    width = mask.shape[1]
    right = scan.segment(both, spacing=0.5, side="right")
    assert (right[:, :width] == mask).mean() > 0.995 and not right[:, width:].any()
    left = scan.segment(both, spacing=0.5, side="left")
    assert (left[:, width:] == mask[:, ::-1]).mean() > 0.995 and not left[:, :width].any()
    with pytest.raises(ValueError, match="side must be 'right' or 'left'"):
        scan.segment(both, spacing=0.5, side="up")
    with pytest.raises(ValueError, match="no femur"):
        scan.segment(np.zeros((20, 20)))
    with pytest.raises(ValueError, match="right edge"):
        scan.segment(density[:, : mask.shape[1] // 2 + 20], spacing=0.5)  # the head cut off


@pytest.mark.parametrize("tilt", [-4.0, 4.0])
def test_segment_fills_the_canal_of_a_shaft_cut_obliquely(tilt):
    """A tube of bone closed at the top, tilted, leaves the image's bottom through its two
    walls at different heights: the canal between them is still the femur's."""
    from scipy import ndimage

    tube = np.zeros((120, 80))
    tube[10:, 20:26] = tube[10:, 54:60] = 1.0  # the walls, 2.8 mm apart at 1 mm a pixel
    tube[10:16, 20:60] = 1.0  # the top
    tilted = ndimage.rotate(tube, tilt, reshape=False, order=1) > 0.5
    found = scan.segment(tilted.astype(float), spacing=1.0)
    assert found[40:100, 30:50].all()
    bottom = np.flatnonzero(tilted[-1])  # one wall, or part of one, reaches the last row
    assert bottom.size < 12


def clinical_density(femur):
    """``femur`` at 0.1 mm: solid cortex, trabecular bone at 35 %, and its trabecular pixels."""
    mask, cortex, canal = femur.compartments(0.1)
    rng = np.random.default_rng(1)
    density = np.where(cortex, 1.0, 0.0)
    trabecular = mask & ~cortex & ~canal
    density[trabecular] = (rng.random(trabecular.sum()) < 0.35).astype(float)
    return density, trabecular


def soft_tissue_above(image, mm, pixel=0.5):
    """``image`` (HU) with ``mm`` of noisy soft tissue above it: what it holds lies inside."""
    rows = np.random.default_rng(5).normal(
        scan.SOFT_TISSUE_HU, 50.0, (round(mm / pixel), image.shape[1])
    )
    return np.vstack([rows, image])


@pytest.mark.parametrize("inside", [False, True])
@pytest.mark.parametrize("fwhm, gap", [(0.7, 1.0), (1.0, 2.0), (1.0, 3.0)])
def test_segment_splits_a_pelvis_off_the_head_along_the_joint(fwhm, gap, inside):
    """A pelvis joined to the head across the joint space at threshold 0.2 after the 1 mm
    closing, cut off by the field's top edge or wholly inside it, is split off; the femur is
    found as it is alone."""
    from scipy import ndimage

    femur = Femur()
    alone = scan.synthetic_scan(clinical_density(femur)[0], 0.1, fwhm=fwhm, noise=50.0).image
    density, pelvis = scan.with_pelvis(clinical_density(femur)[0], 0.1, femur, gap)
    hip = scan.synthetic_scan(density, 0.1, fwhm=fwhm, noise=50.0, border=0.0).image
    assert hip.shape == alone.shape
    (rows, cols), (hr_rows, hr_cols) = hip.shape, pelvis.shape  # 0.5 mm, 0.1 mm
    pelvis = np.pad(pelvis, ((0, 5 * rows - hr_rows), (0, 5 * cols - hr_cols)))
    inside_pelvis = pelvis.reshape(rows, 5, cols, 5).all(axis=(1, 3))
    if inside:
        alone, hip = soft_tissue_above(alone, 20.0), soft_tissue_above(hip, 20.0)
        inside_pelvis = np.pad(inside_pelvis, ((40, 0), (0, 0)))
    want = scan.segment(scan.density_from_hu(alone), spacing=0.5)
    read = scan.density_from_hu(hip)
    bodies = ndimage.label(scan._closed(read > 0.2, 0.5))[0]  # segment's threshold and closing
    assert bodies[inside_pelvis].max() == bodies[-1].max() > 0  # one body, pelvis and shaft
    found = scan.segment(read, spacing=0.5)
    assert (found & want).sum() / (found | want).sum() > 0.995
    assert inside_pelvis.sum() > 2000 and not (found & inside_pelvis).any()


def test_a_slice_of_a_left_hip_is_fitted_as_its_femur_alone():
    """The pelvis split off, the fitted femur is the one its slice alone gives."""
    femur = Femur(side="left")
    density = clinical_density(femur)[0]
    alone = scan.lr_image(scan.synthetic_scan(density, 0.1, fwhm=0.7, noise=30.0))
    hip = scan.synthetic_scan(
        scan.with_pelvis(density, 0.1, femur, 1.0)[0], 0.1, fwhm=0.7, noise=30.0, border=0.0
    )
    found = scan.lr_image(hip)
    want, got = alone.femur.landmarks(), found.femur.landmarks()
    assert found.femur.side == "left"
    assert np.hypot(*np.subtract(got.head_centre, want.head_centre)) < 0.5
    assert got.head_radius == pytest.approx(want.head_radius, abs=0.3)
    assert got.neck_shaft_angle == pytest.approx(want.neck_shaft_angle, abs=0.5)


@pytest.mark.parametrize("side, beside", [("right", False), ("left", False), ("right", True)])
def test_a_pelvis_cut_off_by_the_bottom_edge_too_is_split_off(side, beside):
    """An ischium leaving the slice at the bottom beside the shaft, joined through the pelvis to
    the head, is not taken for the shaft: the femur is segmented and fitted as it is alone;
    also where the slice holds only the pelvis below the head's centre, beside the head."""
    from scipy import ndimage

    femur = Femur(side=side)
    density = clinical_density(femur)[0]
    alone = scan.synthetic_scan(density, 0.1, fwhm=0.7, noise=30.0)
    hip_density, pelvis = scan.with_pelvis(density, 0.1, femur, 1.5, ischium=True)
    if beside:  # with_pelvis's field: 15 mm above the box
        centre_row = round((15.0 + scan.BOX[0] - femur.landmarks().head_centre[1]) / 0.1)
        hip_density[:centre_row][pelvis[:centre_row]] = 0.0
        pelvis[:centre_row] = False
    hip = scan.synthetic_scan(hip_density, 0.1, fwhm=0.7, noise=30.0, border=0.0)
    read = scan.density_from_hu(hip.image)
    want = scan.segment(scan.density_from_hu(alone.image), spacing=0.5)
    bottom = ndimage.label(scan._closed(read > 0.2, 0.5))[0][-1]
    columns = np.pad(pelvis[-1], (0, 5 * bottom.size - pelvis.shape[1]))  # 0.1 mm to 0.5 mm
    ischium = columns.reshape(-1, 5).all(axis=1)
    shaft = want[-1] & (bottom > 0)  # the walls, not the canal
    assert ischium.any() and (bottom[ischium] > 0).all()
    assert np.unique(bottom[ischium | shaft]).size == 1  # one body
    found = scan.segment(read, spacing=0.5)
    assert (found & want).sum() / (found | want).sum() > 0.995
    assert not found[-1][ischium].any()
    got, fitted = scan.lr_image(hip).femur.landmarks(), scan.lr_image(alone).femur.landmarks()
    assert np.hypot(*np.subtract(got.head_centre, fitted.head_centre)) < 0.5
    assert got.neck_shaft_angle == pytest.approx(fitted.neck_shaft_angle, abs=0.5)


def test_a_pelvis_joining_both_hips_of_a_slice_leaves_the_femur_of_the_side_asked():
    """Split off a pelvis that spans both hips, the two femurs are apart: ``side`` picks one,
    found as it is without the pelvis (before, both came back as one femur)."""
    hips, alone = [], []
    for side in ("right", "left"):
        femur = Femur(side=side)
        density = clinical_density(femur)[0]
        hips.append(scan.with_pelvis(density, 0.1, femur, 1.5)[0])
        alone.append(np.pad(density, ((150, 0), (150, 150))))  # with_pelvis's 15 mm field
    both = np.hstack(hips)
    middle = hips[0].shape[1]
    both[:100, middle - 300 : middle + 300] = 1.0  # bone joining the two, cut by the top edge
    read = scan.density_from_hu(
        scan.synthetic_scan(both, 0.1, fwhm=0.7, noise=30.0, border=0.0).image
    )
    half = middle // 5  # at 0.5 mm
    for k, (side, taken) in enumerate((("right", np.s_[:, :half]), ("left", np.s_[:, half:]))):
        one = [a if j == k else np.zeros_like(a) for j, a in enumerate(alone)]
        one_scan = scan.synthetic_scan(np.hstack(one), 0.1, fwhm=0.7, noise=30.0, border=0.0)
        want = scan.segment(scan.density_from_hu(one_scan.image), spacing=0.5)
        found = scan.segment(read, spacing=0.5, side=side)
        assert found[taken].sum() == found.sum()  # that side's alone
        assert (found & want).sum() / (found | want).sum() > 0.995


def test_a_femur_fitted_far_from_the_segmented_one_is_refused():
    ct = clinical_scan(Femur(), pixel=0.5, fwhm=0.7)
    fitted = scan.lr_image(ct)
    assert fitted.meta["fit_dice"] > 0.98
    x, y = fitted.meta["landmarks"]["head_centre"]
    assert scan.lr_image(ct, landmarks={"head_centre": (x, y + 2.0)}).meta["fit_dice"] > 0.9
    with pytest.raises(ValueError, match=r"Dice 0\.8\d \(at least 0\.9 is a femur\): landmarks"):
        scan.lr_image(ct, landmarks={"head_centre": (x, y + 15.0)})  # 15 mm low


@pytest.mark.parametrize("gap", [0.5, 1.0])
def test_a_pelvis_the_blur_joins_to_the_head_is_refused(gap):
    density, _ = scan.with_pelvis(clinical_density(Femur())[0], 0.1, Femur(), gap)
    hip = scan.synthetic_scan(density, 0.1, fwhm=1.0, noise=50.0, border=0.0)
    with pytest.raises(ValueError, match=r"top edge: it is cut off .* joint space too narrow"):
        scan.segment(scan.density_from_hu(hip.image), spacing=0.5)
    # wholly inside the slice it stays with the femur, which the femur box cannot hold
    inside = scan.Scan(soft_tissue_above(hip.image, 20.0), hip.spacing, "HU")
    with pytest.raises(ValueError, match=r"mm wide; the box holds .* pelvis joined to its head"):
        scan.lr_image(inside)


def test_segment_refuses_a_femur_whose_head_the_top_edge_cuts_off():
    """Flooded from the cut, a head splits along no valley: it is refused, not split."""
    density = clinical_density(Femur())[0]
    for fwhm in (0.5, 1.0):
        read = scan.density_from_hu(scan.synthetic_scan(density, 0.1, fwhm=fwhm).image)
        with pytest.raises(ValueError, match="top edge"):
            scan.segment(read[60:], spacing=0.5)  # 15 mm of field, 15 of the head's 44 mm


def clinical_scan(femur, pixel=0.6, cut=0.0, fwhm=0.8):
    """A coronal scan of ``femur`` (:func:`clinical_density`), blurred by ``fwhm`` mm and noisy,
    ending ``cut`` mm above the femur box's bottom edge."""
    density = clinical_density(femur)[0]
    density = density[: len(density) - round(cut / 0.1)]
    return scan.synthetic_scan(density, 0.1, pixel=pixel, fwhm=fwhm, noise=30.0)


def test_a_synthetic_scan_reads_the_marrow_inside_the_bone_as_no_bone():
    """Scanned sharp at 0.5 mm, the trabecular bone reads its block mean: the spaces between
    the trabeculae and the canal are marrow (0 HU), the outside soft tissue."""
    density, trabecular = clinical_density(Femur())
    ny, nx = (n - n % 5 for n in density.shape)
    density, trabecular = density[:ny, :nx], trabecular[:ny, :nx]
    read = scan.density_from_hu(scan.synthetic_scan(density, 0.1, pixel=0.5, border=2.0).image)
    read = read[4 : 4 + ny // 5, 4 : 4 + nx // 5]  # the 2 mm border: 4 pixels
    inner = dataset.downscale(trabecular.astype(float), 5) == 1.0
    block = dataset.downscale(density, 5)
    assert inner.sum() > 1000
    assert read[inner].mean() == pytest.approx(block[inner].mean(), rel=0.003)
    assert scan.synthetic_scan(density, 0.1, pixel=0.5, border=2.0).image[0, 0] == pytest.approx(
        scan.SOFT_TISSUE_HU
    )


def test_a_synthetic_scan_keeps_the_mass_and_blurs_by_its_fwhm():
    density = np.zeros((200, 200))
    density[100:, 100] = 1.0  # a line of bone, 0.1 mm wide, to the bottom
    sharp = scan.synthetic_scan(density, 0.1, pixel=0.1, border=0.0)
    np.testing.assert_allclose(sharp.image[150], np.where(np.arange(200) == 100, 1800.0, 40.0))
    blurred = scan.synthetic_scan(density, 0.1, pixel=0.1, fwhm=1.0, border=0.0)
    profile = blurred.image[150] - 40.0  # above the soft tissue beside the line
    half = profile.max() / 2
    width = np.flatnonzero(profile > half)
    assert (width[-1] - width[0] + 1) * 0.1 == pytest.approx(1.0, abs=0.15)
    coarse = scan.synthetic_scan(density, 0.1, pixel=0.5, border=2.0)
    assert coarse.spacing == (0.5, 0.5) and coarse.image.shape == (44, 48)
    noisy = scan.synthetic_scan(density, 0.1, pixel=0.5, noise=50.0, seed=3)
    assert np.std(noisy.image[:10, :10]) == pytest.approx(50.0, rel=0.2)


def test_deblur_undoes_a_known_gaussian_blur():
    """A smooth image blurred by a Gaussian of the given FWHM (pixels of 0.4 x 0.5 mm) comes
    back with a balance near zero; a uniform image stays as it is."""
    import scipy.ndimage as ndi

    rows, cols = np.mgrid[:64, :80]
    sharp = sum(
        np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 2.0**2)) for r, c in [(20, 25), (40, 50)]
    )
    fwhm, spacing = 1.0, (0.4, 0.5)
    sigma = [fwhm / (2 * np.sqrt(2 * np.log(2))) / s for s in spacing]
    blurred = scan.Scan(ndi.gaussian_filter(sharp, sigma, truncate=8.0), spacing, "density")
    assert np.abs(blurred.image - sharp).max() > 0.1
    restored = scan.deblur(blurred, fwhm, balance=1e-9)
    assert restored.spacing == spacing and restored.unit == "density"
    np.testing.assert_allclose(restored.image, sharp, atol=1e-4)
    flat = scan.Scan(np.full((30, 20), 250.0), spacing, "HU")
    np.testing.assert_allclose(scan.deblur(flat, 1.0).image, 250.0)


def test_deblur_brings_a_clinical_slice_of_struts_nearer_the_unblurred_one():
    """Struts 0.2 mm thick, 1 mm apart, in a slice at 0.5 mm, FWHM 0.7 mm and 30 HU: the
    bone's HU deblurred lie nearer the unblurred slice's than the blurred ones do."""
    density = np.zeros((400, 400))
    density[100:300, 100:300] = 0.3
    for start in range(100, 300, 20):
        density[100:300, start : start + 4] = 1.0
        density[start : start + 4, 100:300] = 1.0
    sharp = scan.synthetic_scan(density, 0.05, pixel=0.5, border=2.0).image
    blurred = scan.synthetic_scan(density, 0.05, pixel=0.5, fwhm=0.7, noise=30.0, border=2.0)
    bone = sharp > 100
    blurred_error = np.sqrt(np.mean((blurred.image - sharp)[bone] ** 2))
    deblurred_error = np.sqrt(np.mean((scan.deblur(blurred, 0.7).image - sharp)[bone] ** 2))
    assert deblurred_error < 0.75 * blurred_error


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), "0.7"])
def test_deblur_refuses_a_width_or_balance_that_is_no_positive_number(bad):
    image = scan.Scan(np.zeros((8, 8)), (0.5, 0.5), "HU")
    with pytest.raises(ValueError, match="fwhm must be a positive number"):
        scan.deblur(image, bad)
    with pytest.raises(ValueError, match="balance must be a positive number"):
        scan.deblur(image, 0.7, balance=bad)


@pytest.fixture(scope="module")
def left_scan():
    """A drawn left femur (seed 5) and its clinical scan."""
    from femsr.femur import sample

    femur = sample(5)
    return femur, clinical_scan(femur)


def in_scan(point, border=15.0):
    """A point of the femur box (mm, y up) in the frame of its synthetic scan (y down)."""
    return point[0] + border, 104.0 - point[1] + border


@pytest.mark.parametrize("seed", [5, 0])
def test_a_scan_becomes_the_networks_input_with_its_fitted_femur(seed, left_scan):
    from femsr.femur import sample

    femur, ct = left_scan if seed == 5 else (sample(seed), clinical_scan(sample(seed)))
    lr = scan.lr_image(ct)
    assert lr.density.shape == (208, 189) and lr.pixel_size == 0.5
    assert lr.femur.side == femur.side
    angle = femur.landmarks().neck_shaft_angle
    assert lr.femur.landmarks().neck_shaft_angle == pytest.approx(angle, abs=2.0)
    inside = lr.density > 0
    outline = lr.femur.mask(0.5)
    assert 2 * (outline & inside).sum() / (outline.sum() + inside.sum()) > 0.97
    for rows, cols in lr.femur.rois(0.5).values():  # every ROI in bone of the scan
        assert inside[rows, cols].mean() > 0.95
    # The landmarks found, in the scan's frame, against the phantom's: the lesser trochanters
    # of both stand out of the medial outline (by 1.7 and 5.8 mm).
    found, true = lr.meta["landmarks"], femur.landmarks()
    assert found["side"] == femur.side
    assert found["head_radius"] == pytest.approx(true.head_radius, abs=0.5)
    for name, tolerance in [
        ("head_centre", 0.5),
        ("greater_trochanter", 1.5),
        ("lesser_trochanter", 2.5),
    ]:
        error = np.hypot(*np.subtract(found[name], in_scan(getattr(true, name))))
        assert error < tolerance, name
    json.dumps(found)  # a --landmarks file as it is
    # meta["to_box"] takes the scan's frame to the fitted femur's: its head centre there.
    head = np.array(lr.meta["to_box"]) @ [*in_scan(true.head_centre), 1.0]
    assert np.hypot(*np.subtract(head[:2], lr.femur.landmarks().head_centre)) < 0.5


def test_a_deblurred_scan_keeps_the_fit_of_the_scan_as_it_is(left_scan):
    """Deblurring changes the density, not the outline: the landmarks and the fitted femur
    are read off the blurred scan, whose edges the Wiener filter's ringing does not roughen."""
    ct = clinical_scan(left_scan[0], pixel=0.5, fwhm=1.0)
    plain, deblurred = scan.lr_image(ct), scan.lr_image(ct, psf_fwhm=1.0)
    assert deblurred.femur == plain.femur
    for key in ("landmarks", "to_box", "tilt"):
        assert deblurred.meta[key] == plain.meta[key]
    assert np.abs(deblurred.density - plain.density).mean() > 0.01


def test_a_slice_of_coarse_pixels_keeps_its_detail_on_the_networks_grid():
    """lr_image resamples a slice to the network's 0.5 mm pixels by cubic splines, which keep
    the edges a 0.7 mm slice holds where linear interpolation blurs them: the detail a
    one-pixel Gaussian takes off is over half a 0.5 mm slice's (linear: 40 %)."""
    import scipy.ndimage as ndi

    density = clinical_density(Femur())[0]

    def detail(pixel):
        lr = scan.lr_image(scan.synthetic_scan(density, 0.1, pixel=pixel)).density
        inner = ndi.binary_erosion(lr > 0, iterations=3)
        return np.std((lr - ndi.gaussian_filter(lr, 1.0))[inner])

    assert detail(0.7) > 0.5 * detail(0.5)


def test_a_scan_ending_above_the_femur_box_has_its_shaft_continued():
    """The load cases hold the shaft at the box's bottom edge: where the scan ends above it,
    the shaft is drawn on as the scan's last row, so that edge is bone; not past 10 mm."""
    from femsr.femur import sample

    femur = sample(0)
    assert scan.lr_image(clinical_scan(femur)).meta["shaft_continued"] == 0.0
    lr = scan.lr_image(clinical_scan(femur, cut=5.0))
    drawn = round(lr.meta["shaft_continued"] / 0.5)
    assert 1 <= drawn <= 10
    last = lr.density[-drawn - 1]
    np.testing.assert_array_equal(lr.density[-drawn:], np.repeat(last[None], drawn, axis=0))
    # the bottom row's bone spans the fitted outline's (the canal between is marrow)
    bottom = np.flatnonzero(lr.density[-1] > 0)
    outline = np.flatnonzero(lr.femur.mask(0.5)[-1])
    assert abs(bottom[0] - outline[0]) <= 1 and abs(bottom[-1] - outline[-1]) <= 1
    with pytest.raises(ValueError, match="continues the shaft by at most 10 mm"):
        scan.lr_image(clinical_scan(femur, cut=12.0))


@pytest.mark.parametrize("tilt", [-3.0, 3.0])
def test_a_femur_scanned_at_a_tilt_is_turned_upright(tilt):
    from scipy import ndimage

    from femsr.femur import sample

    femur = sample(0)
    mask, cortex, canal = femur.compartments(0.1)
    density = np.where(cortex, 1.0, np.where(mask & ~canal, 0.35, 0.0))
    true = femur.landmarks()
    # The head centre goes where the tilt takes it: a dot turned with the density.
    dot = np.zeros_like(density)
    dot[round(mask.shape[0] - true.head_centre[1] / 0.1), round(true.head_centre[0] / 0.1)] = 1
    row, col = ndimage.center_of_mass(ndimage.rotate(dot, tilt, reshape=False, order=1))
    tilted = ndimage.rotate(density, tilt, reshape=False, order=1)
    ct = scan.synthetic_scan(tilted, 0.1, pixel=0.6, fwhm=0.8, noise=30.0)
    lr = scan.lr_image(ct)
    # The scan is turned back (scipy turns counterclockwise; the tilt is clockwise) and the
    # phantom fitted upright keeps the neck-shaft angle, which an unturned fit misses by 2°.
    assert lr.meta["tilt"] == pytest.approx(-tilt, abs=1.5)
    assert lr.femur.landmarks().neck_shaft_angle == pytest.approx(true.neck_shaft_angle, abs=1.0)
    assert lr.femur.side == femur.side
    head = in_scan(((col + 0.5) * 0.1, mask.shape[0] * 0.1 - (row + 0.5) * 0.1))
    assert np.hypot(*np.subtract(lr.meta["landmarks"]["head_centre"], head)) < 0.5
    in_box = np.array(lr.meta["to_box"]) @ [*head, 1.0]  # through the turn
    assert np.hypot(*np.subtract(in_box[:2], lr.femur.landmarks().head_centre)) < 0.5
    # an image on the box (the input, as its reconstruction would be) placed on the scan: the
    # fitted head centre lands on the scan's
    placed = scan.box_placement(ct, lr.meta["to_box"], lr.density.shape, 0.5)
    x, y = lr.femur.landmarks().head_centre
    at = placed @ [x, lr.density.shape[0] * 0.5 - y, 0.0, 1.0]
    assert np.linalg.norm(at - scan.placement(ct) @ [*head, 0.0, 1.0]) < 0.5
    inside = lr.density > 0
    outline = lr.femur.mask(0.5)
    assert 2 * (outline & inside).sum() / (outline.sum() + inside.sum()) > 0.95


def test_a_slice_of_both_femurs_gives_the_side_asked_for():
    density = clinical_density(Femur())[0]  # a right femur; mirrored, a left one beside it
    ct = scan.synthetic_scan(np.hstack([density, density[:, ::-1]]), 0.1, pixel=0.6, fwhm=0.8)
    middle = 15.0 + density.shape[1] * 0.1  # mm from the slice's left edge
    for side in ("right", "left"):
        lr = scan.lr_image(ct, landmarks={"side": side})
        assert lr.femur.side == side
        head = lr.meta["landmarks"]["head_centre"]
        assert (head[0] < middle) == (side == "right")  # the patient's right on the left


def test_femsr_reconstruct_takes_the_side_of_a_slice_of_both_femurs(
    tmp_path, capsys, network_inputs
):
    density = clinical_density(Femur())[0]  # a right femur; mirrored, a left one beside it
    ct = scan.synthetic_scan(np.hstack([density, density[:, ::-1]]), 0.1, pixel=0.6, fwhm=0.8)
    scan.write_scan(tmp_path / "both.nii.gz", ct)
    command = ["reconstruct", str(tmp_path / "both.nii.gz"), str(tmp_path / "hr.npy")]
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({"neck_shaft_angle": 131.0, "side": "right"}))
    assert cli.main([*command, "--side", "left"]) == 0
    assert cli.main([*command, "--side", "right"]) == 0
    assert cli.main([*command, "--side", "left", "--landmarks", str(landmarks)]) == 0
    (left, _), (right, _), (_, femur) = network_inputs
    assert left.femur.side == "left" and right.femur.side == "right"
    middle = 15.0 + density.shape[1] * 0.1  # mm from the slice's left edge
    heads = [lr.meta["landmarks"]["head_centre"][0] for lr in (right, left)]
    assert heads[0] < middle < heads[1]  # the patient's right on the image's left
    assert femur.side == "left" and femur.neck_shaft_angle == 131.0  # --side over the file's
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        scan.write_scan(folder / name, ct)
    assert cli.main(["reconstruct", str(folder), str(tmp_path / "out"), "--side", "left"]) == 0
    assert [lr.femur.side for lr, _ in network_inputs[3:]] == ["left", "left"]
    np.save(folder / "lr.npy", np.zeros((208, 189)))
    assert cli.main(["reconstruct", str(folder), str(tmp_path / "more"), "--side", "left"]) == 2
    assert "--side picks the femur of a scan; 'lr.npy' is none" in capsys.readouterr().err


def test_landmarks_given_in_the_scans_frame_are_held(left_scan):
    femur, ct = left_scan
    true = femur.landmarks()
    head = in_scan(true.head_centre)
    greater = in_scan(true.greater_trochanter)
    greater = (greater[0], greater[1] - 2.0)  # 2 mm higher than the phantom's
    given = {"head_centre": head, "greater_trochanter": greater, "neck_shaft_angle": 131.0}
    lr = scan.lr_image(ct, landmarks=given)
    assert lr.femur.neck_shaft_angle == 131.0
    assert {name: lr.meta["landmarks"][name] for name in given} == given
    # In the box's frame (y up) the fitted femur's trochanter sits where it was given.
    marks = lr.femur.landmarks()
    fitted = np.subtract(marks.greater_trochanter, marks.head_centre)
    wanted = (greater[0] - head[0], head[1] - greater[1])
    assert np.hypot(*(fitted - wanted)) < 0.3
    with pytest.raises(ValueError, match="unknown landmarks"):
        scan.lr_image(ct, landmarks={"trochanter": [1.0, 2.0]})


def test_landmarks_files_are_read_and_checked(tmp_path):
    path = tmp_path / "landmarks.json"
    path.write_text('{"side": "left", "lesser_trochanter": [40, 90.5]}')
    assert scan.read_landmarks(path) == {"side": "left", "lesser_trochanter": (40.0, 90.5)}
    for text, match in [
        ('{"side": "left",}', "is not JSON"),
        ("[1, 2]", "holds a JSON list; landmarks are a JSON object"),
        ('{"head_radius": "big"}', "landmarks.json': head_radius must be numbers, got str"),
        ('{"head_radius": 0}', "head_radius must be positive"),
        ('{"neck": 130}', r"unknown landmarks \['neck'\]"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            scan.read_landmarks(path)
    with pytest.raises(FileNotFoundError):
        scan.read_landmarks(tmp_path / "missing.json")


@pytest.mark.parametrize("fwhm", [0.5, 0.8, 1.1])
def test_estimate_psf_fwhm_reads_a_scans_blur_off_the_shafts_edges(fwhm, left_scan):
    """A scan's FWHM, read off the shaft's edges, whichever side the femur lies on."""
    femur = left_scan[0]
    ct = clinical_scan(femur, fwhm=fwhm)
    assert scan.estimate_psf_fwhm(ct) == pytest.approx(fwhm, abs=0.06)
    mirrored = scan.Scan(ct.image[:, ::-1], ct.spacing, ct.unit)
    assert scan.estimate_psf_fwhm(mirrored) == pytest.approx(fwhm, abs=0.06)


def test_estimate_psf_fwhm_needs_a_shaft():
    rows, cols = np.mgrid[:60, :60]
    disc = np.where(np.hypot(rows - 30, cols - 30) < 6, 1500.0, 40.0)  # 6 mm across
    with pytest.raises(ValueError, match="too little to read the point-spread function off"):
        scan.estimate_psf_fwhm(scan.Scan(disc, (0.5, 0.5), "HU"))


@pytest.mark.parametrize("noise", [0.0, 20.0, 50.0])
def test_estimate_noise_reads_a_scans_noise_off_the_soft_tissue(noise, left_scan):
    """In HU, whether the scan holds HU or density."""
    density = clinical_density(left_scan[0])[0]
    ct = scan.synthetic_scan(density, 0.1, pixel=0.6, fwhm=0.8, noise=noise)
    assert scan.estimate_noise(ct) == pytest.approx(noise, abs=0.05 * noise + 0.5)
    calibrated = scan.Scan(ct.image / scan.TISSUE_HU, ct.spacing, "density")
    assert scan.estimate_noise(calibrated) == pytest.approx(noise, abs=0.05 * noise + 0.5)


def test_estimate_noise_reads_noise_a_reconstruction_kernel_correlates(left_scan):
    """White noise smoothed over 1 mm FWHM, as a CT kernel correlates it: neighbouring pixels
    differ by 0.6 of its spread, pixels 2 mm apart by all of it."""
    import scipy.ndimage as ndi

    density = clinical_density(left_scan[0])[0]
    ct = scan.synthetic_scan(density, 0.1, pixel=0.5, fwhm=0.8, noise=0.0)
    grain = ndi.gaussian_filter(np.random.default_rng(3).normal(size=ct.image.shape), 0.85)
    noisy = scan.Scan(ct.image + 40.0 * grain / grain.std(), ct.spacing, "HU")
    assert scan.estimate_noise(noisy) == pytest.approx(40.0, rel=0.05)


def test_estimate_noise_needs_soft_tissue(left_scan):
    ct = left_scan[1]
    in_air = scan.Scan(np.where(ct.image < 300.0, -1000.0, ct.image), ct.spacing, "HU")
    with pytest.raises(ValueError, match="no soft tissue"):
        scan.estimate_noise(in_air)
    with pytest.warns(UserWarning, match="no noise added to the scan: .* no soft tissue"):
        lr = scan.lr_image(in_air, psf_fwhm=1.0, dither=True)
    assert (lr.meta["noise"], lr.meta["dither"]) == (None, 0.0)


@pytest.mark.parametrize(("noise", "unit"), [(0.0, "HU"), (30.0, "HU"), (30.0, "density")])
def test_a_scan_deblurred_by_a_wide_psf_is_brought_up_to_the_blurry_scans_noise(
    noise, unit, left_scan
):
    density = clinical_density(left_scan[0])[0]
    ct = scan.synthetic_scan(density, 0.1, pixel=0.5, fwhm=1.0, noise=noise)
    if unit == "density":
        ct = scan.Scan(ct.image / scan.TISSUE_HU, ct.spacing, unit)
    dithered, read, added = scan._dithered(ct, scan.MARROW_HU, scan.TISSUE_HU)
    assert read == pytest.approx(noise, abs=0.05 * noise + 0.5)
    assert np.hypot(read, added) == pytest.approx(BLURRY_SCAN_NOISE_HU)
    assert scan.estimate_noise(dithered) == pytest.approx(BLURRY_SCAN_NOISE_HU, rel=0.05)
    lr = scan.lr_image(ct, psf_fwhm=1.0, dither=True)
    assert (lr.meta["noise"], lr.meta["dither"]) == (read, added)
    again = scan.lr_image(ct, psf_fwhm=1.0, dither=True)
    assert np.array_equal(lr.density, again.density)  # seeded
    plain = scan.lr_image(ct, psf_fwhm=1.0)  # by default nothing is added
    assert (plain.meta["noise"], plain.meta["dither"]) == (None, 0.0)
    assert np.abs(lr.density - plain.density).max() > 0.05
    sharper = scan.lr_image(ct, psf_fwhm=DEBLURRED_MODEL_MAX_FWHM - 0.05, dither=True)
    assert (sharper.meta["noise"], sharper.meta["dither"]) == (None, 0.0)


def test_a_scan_as_noisy_as_a_blurry_scans_noise_is_left_as_it_is(left_scan):

    density = clinical_density(left_scan[0])[0]
    ct = scan.synthetic_scan(density, 0.1, pixel=0.5, fwhm=1.0, noise=1.2 * BLURRY_SCAN_NOISE_HU)
    dithered, _, added = scan._dithered(ct, scan.MARROW_HU, scan.TISSUE_HU)
    assert added == 0.0 and dithered is ct


def test_femsr_reconstruct_takes_a_scan_with_no_other_argument(tmp_path, capsys, left_scan):
    scan.write_scan(tmp_path / "scan.nii.gz", left_scan[1])
    argv = ["reconstruct", str(tmp_path / "scan.nii.gz"), str(tmp_path / "hr.nii.gz")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "208x189 -> 2080x1890" in out
    angle = float(out.split("the femur fitted: left, neck-shaft angle ")[1].split("°")[0])
    assert angle == pytest.approx(left_scan[0].neck_shaft_angle, abs=2.0)
    assert float(out.split("segmented femur's Dice ")[1].split()[0]) > 0.98
    hr = scan.read_scan(tmp_path / "hr.nii.gz")  # 50 µm, stretched as the resampling did
    assert hr.image.shape == (2080, 1890) and hr.spacing == pytest.approx((0.05, 0.05), rel=2e-3)
    assert 0.0 <= hr.image.min() and hr.image.max() <= 1.0
    # placed on the scan: the bone's centre of mass where the scan has it, over the box
    ct = scan.read_scan(tmp_path / "scan.nii.gz")
    rows, cols = np.mgrid[: ct.image.shape[0], : ct.image.shape[1]]
    frame = np.stack([(cols + 0.5) * ct.spacing[1], (rows + 0.5) * ct.spacing[0]], axis=-1)
    world = frame @ ct.affine[:3, :2].T + ct.affine[:3, 3]
    in_hr = (world - hr.affine[:3, 3]) @ np.linalg.pinv(hr.affine[:3, :2]).T / 0.05
    boxed = (in_hr > 0).all(axis=-1) & (in_hr < [1890, 2080]).all(axis=-1)
    density = scan.density_from_hu(ct.image)
    density = np.where(boxed & scan.segment(density, spacing=ct.spacing[0]), density, 0.0)
    scan_centre = (world * density[..., None]).sum(axis=(0, 1)) / density.sum()
    rows, cols = np.mgrid[:2080, :1890]
    hr_frame = np.stack([(cols + 0.5) * 0.05, (rows + 0.5) * 0.05], axis=-1)
    hr_world = hr_frame @ hr.affine[:3, :2].T + hr.affine[:3, 3]
    hr_centre = (hr_world * hr.image[..., None]).sum(axis=(0, 1)) / hr.image.sum()
    assert np.linalg.norm(hr_centre - scan_centre) < 0.5


@pytest.fixture
def network_inputs(monkeypatch):
    """``femsr.reconstruct``'s network replaced by one that draws nothing: the list of the
    (input, femur) it is called with."""
    import importlib

    module = importlib.import_module("femsr.reconstruct")  # femsr.reconstruct is the function
    taken = []

    def network(lr, *, femur, pixel_size, stats, **options):
        taken.append((lr, femur))
        stats.update(dict.fromkeys(("total", "lr_fe", "inference", "quilting"), 0.0))
        stats["device"] = "none"
        return np.zeros((2080, 1890), np.float32)

    monkeypatch.setattr(module, "_loaded", lambda model, device: None)
    monkeypatch.setattr(module, "reconstruct", network)
    return taken


def test_femsr_reconstruct_takes_a_scans_calibration(tmp_path, capsys, left_scan, network_inputs):
    ct = left_scan[1]
    scan.write_scan(tmp_path / "scan.nii.gz", ct)
    # the same slice from a scanner that reads water at 100 HU and bone tissue at 1200 HU
    other = scan.Scan(100.0 + ct.image * 1100.0 / 1800.0, ct.spacing, ct.unit)
    scan.write_scan(tmp_path / "other.nii.gz", other)
    out = str(tmp_path / "hr.npy")
    assert cli.main(["reconstruct", str(tmp_path / "scan.nii.gz"), out]) == 0
    command = ["reconstruct", str(tmp_path / "other.nii.gz"), out]
    assert cli.main([*command, "--calibration", "100", "1200"]) == 0
    (plain, _), (calibrated, _) = network_inputs
    np.testing.assert_allclose(calibrated.density, plain.density, atol=1e-5)
    assert cli.main(command) == 0  # read with the default calibration: less bone
    assert network_inputs[2][0].density.sum() < 0.9 * plain.density.sum()
    capsys.readouterr()
    assert cli.main([*command, "--calibration", "100", "100"]) == 2
    assert "tissue HU (100.0) must exceed marrow HU (100.0)" in capsys.readouterr().err
    np.save(tmp_path / "lr.npy", np.zeros((208, 189)))
    assert cli.main(["reconstruct", str(tmp_path / "lr.npy"), out, "--calibration", "0", "1"]) == 2
    assert "a calibration is a scan's" in capsys.readouterr().err


def test_femsr_reconstruct_takes_a_dicom_series_folder(tmp_path, left_scan, network_inputs):
    ct = left_scan[1]
    hu = 2.0 * np.round(ct.image / 2.0)  # as DICOM stores it: (HU + 1024) / 2
    scan.write_scan(tmp_path / "scan.nii.gz", scan.Scan(hu, ct.spacing, "HU"))
    series = tmp_path / "series"
    series.mkdir()
    coronal = [1, 0, 0, 0, 0, -1]
    for k, y in enumerate([0.0, 1.0, 2.0]):  # files without a suffix, as scanners name them
        stored = (hu + 1024.0) / 2.0 if y == 1.0 else np.full_like(hu, 512.0)
        dicom_slice(series / f"IM{k}", stored, coronal, [0.0, y, 0.0], spacing=ct.spacing)
    assert scan.is_dicom_series(series) and not scan.is_dicom_series(tmp_path)
    assert cli.main(["reconstruct", str(series), str(tmp_path / "hr.nii.gz")]) == 0
    assert cli.main(["reconstruct", str(tmp_path / "scan.nii.gz"), str(tmp_path / "hr.npy")]) == 0
    series_lr, slice_lr = (lr.density for lr, _ in network_inputs)
    np.testing.assert_allclose(series_lr, slice_lr, atol=1e-6)  # the series' slice as one scan


def test_femsr_reconstruct_reads_a_tiff_as_a_scan(tmp_path, capsys, left_scan, network_inputs):
    import tifffile

    ct = left_scan[1]
    scan.write_scan(tmp_path / "scan.nii.gz", ct)
    scan.write_scan(tmp_path / "scan.tif", ct)  # with its spacing in the resolution tags
    tifffile.imwrite(tmp_path / "bare.tif", ct.image.astype(np.float32))  # with none
    out = str(tmp_path / "hr.npy")
    assert cli.main(["reconstruct", str(tmp_path / "scan.nii.gz"), out]) == 0
    tagged = ["reconstruct", str(tmp_path / "scan.tif"), out, "--scan"]
    assert cli.main(tagged) == 0
    pixel = str(ct.spacing[0])
    bare = ["reconstruct", str(tmp_path / "bare.tif"), out, "--scan"]
    assert cli.main([*bare, "--pixel-size", pixel]) == 0
    (nifti, femur), *tiffs = network_inputs
    for lr, fitted in tiffs:  # the same slice, read alike
        np.testing.assert_allclose(lr.density, nifti.density, atol=1e-5)
        assert fitted.neck_shaft_angle == pytest.approx(femur.neck_shaft_angle, abs=1e-6)
    assert capsys.readouterr().out.count("the femur fitted: left") == 3
    assert cli.main(["reconstruct", str(tmp_path / "scan.tif"), out]) == 2  # a bare image
    said = capsys.readouterr().err
    assert "holds values in [" in said and "no bone density in [0, 1]" in said
    assert "femsr reconstruct --scan" in said
    assert cli.main(bare) == 2
    assert "has no pixel spacing" in capsys.readouterr().err
    assert cli.main([*tagged, "--pixel-size", "0.7"]) == 2  # against its own spacing
    assert f"has pixels of {ct.spacing[0]:g} x {ct.spacing[1]:g} mm, not 0.7 mm" in (
        capsys.readouterr().err
    )
    folder = tmp_path / "tiffs"
    folder.mkdir()
    (tmp_path / "scan.tif").rename(folder / "scan.tif")
    each = ["reconstruct", str(folder), str(tmp_path / "out"), "--side", "left"]
    assert cli.main(each) == 2
    assert "--side picks the femur of a scan; 'scan.tif' is none" in capsys.readouterr().err
    assert cli.main([*each, "--scan"]) == 0 and (tmp_path / "out" / "scan.npz").exists()
    np.testing.assert_allclose(network_inputs[-1][0].density, nifti.density, atol=1e-5)


def test_femsr_reconstruct_takes_a_scans_landmarks(tmp_path, capsys, left_scan, network_inputs):
    import importlib

    module = importlib.import_module("femsr.reconstruct")  # femsr.reconstruct is the function
    scan.write_scan(tmp_path / "scan.nii.gz", left_scan[1])
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({"neck_shaft_angle": 131.0, "side": "left"}))
    command = ["reconstruct", str(tmp_path / "scan.nii.gz"), str(tmp_path / "hr.npy")]
    assert cli.main([*command, "--landmarks", str(landmarks)]) == 0
    femur = network_inputs[0][1]
    assert femur.neck_shaft_angle == 131.0 and femur.side == "left"
    landmarks.write_text(json.dumps({"neck_shaft_angle": 170.0}))
    assert cli.main([*command, "--landmarks", str(landmarks)]) == 2
    assert "landmarks.json': neck_shaft_angle must lie in [110, 150]" in capsys.readouterr().err
    folder = ["reconstruct", str(tmp_path), str(tmp_path / "out"), "--landmarks", str(landmarks)]
    assert cli.main(folder) == 2
    assert "--landmarks are one scan's" in capsys.readouterr().err
    with pytest.raises(ValueError, match="landmarks are a scan's"):
        module.reconstruct_file(tmp_path / "hr.npy", tmp_path / "x.npy", landmarks={})
    assert cli.main(command) == 0  # left_scan: FWHM 0.8 mm, read off by default
    said = capsys.readouterr().out.split("the scanner's point-spread function: of ")[1]
    assert float(said.split(" mm FWHM")[0]) == pytest.approx(0.8, abs=0.06)
    assert "noise:" not in said  # nothing added below the blurry scans' width
    assert cli.main([*command, "--psf-fwhm", "none"]) == 0
    assert "the scanner's point-spread function: not undone" in capsys.readouterr().out
    assert cli.main([*command, "--psf-fwhm", "1.0"]) == 0  # left_scan: 0.6 mm pixels
    assert "noise:" not in capsys.readouterr().out  # nothing added to coarse pixels
    scan.write_scan(tmp_path / "fine.nii.gz", clinical_scan(left_scan[0], pixel=0.5))
    fine = ["reconstruct", str(tmp_path / "fine.nii.gz"), str(tmp_path / "hr.npy")]
    assert cli.main([*fine, "--psf-fwhm", "1.0"]) == 0  # 30 HU of noise
    added = np.sqrt(BLURRY_SCAN_NOISE_HU**2 - 30.0**2)
    assert f"noise: 30 HU read off the soft tissue, {added:.0f} HU added" in capsys.readouterr().out
    assert cli.main([*fine, "--psf-fwhm", "1.0", "--tta"]) == 0  # averaged: none added
    assert "noise:" not in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's refusal
        cli.main([*command, "--psf-fwhm", "wide"])
    assert "--psf-fwhm: expected mm, auto or none, got 'wide'" in capsys.readouterr().err


def test_a_scan_is_deblurred_for_the_deblurred_scan_model_unless_told(
    tmp_path, monkeypatch, caplog, left_scan
):
    import importlib

    module = importlib.import_module("femsr.reconstruct")  # femsr.reconstruct is the function
    chosen = []

    def loaded(model, device):
        chosen.append(model)

    def network(lr, *, stats, **options):  # a scan's FemurImage or a bare image
        ny, nx = getattr(lr, "density", lr).shape
        return np.zeros((10 * ny, 10 * nx), np.float32)

    monkeypatch.setattr(module, "_loaded", loaded)
    monkeypatch.setattr(module, "reconstruct", network)
    scan.write_scan(tmp_path / "scan.nii.gz", left_scan[1])
    np.save(tmp_path / "lr.npy", np.full((20, 20), 0.3, np.float32))
    ct = tmp_path / "scan.nii.gz"
    stats = module.reconstruct_file(ct, tmp_path / "a.npy")
    assert stats["psf_fwhm"] == pytest.approx(0.8, abs=0.06)  # read off the scan
    module.reconstruct_file(ct, tmp_path / "b.npy", model="mine.pt")
    assert "psf_fwhm" not in module.reconstruct_file(tmp_path / "lr.npy", tmp_path / "c.npy")
    assert module.reconstruct_file(ct, tmp_path / "d.npy", psf_fwhm=0.7)["psf_fwhm"] == 0.7
    assert module.reconstruct_file(ct, tmp_path / "e.npy", psf_fwhm=None)["psf_fwhm"] is None

    def unreadable(scan):
        raise ValueError("no shaft")

    monkeypatch.setattr(scan, "estimate_psf_fwhm", unreadable)
    assert module.reconstruct_file(ct, tmp_path / "f.npy")["psf_fwhm"] is None
    assert "no shaft; reconstructed without deblurring, by the scan model" in caplog.text
    monkeypatch.undo()
    caplog.clear()
    cut = scan.read_scan(ct)
    scan.write_scan(tmp_path / "cut.nii.gz", scan.Scan(cut.image[:, :-30], cut.spacing, "HU"))
    with pytest.raises(scan.SegmentationError, match="right edge: it is cut off"):
        module.reconstruct_file(tmp_path / "cut.nii.gz", tmp_path / "g.npy")
    assert "without deblurring" not in caplog.text  # refused, not first read unblurred
    deblurred, blurred = str(module.BUNDLED_DEBLURRED_MODEL), str(module.BUNDLED_SCAN_MODEL)
    assert chosen == [deblurred, "mine.pt", None, deblurred, blurred, blurred]
    assert module.BUNDLED_SCAN_MODEL.is_file() and module.BUNDLED_DEBLURRED_MODEL.is_file()
    with pytest.raises(ValueError, match="psf_fwhm is a scan's"):
        module.reconstruct_file(tmp_path / "lr.npy", tmp_path / "g.npy", psf_fwhm=0.8)


def test_reconstruct_takes_the_scan_model_for_a_scans_image(monkeypatch, left_scan):
    import importlib

    module = importlib.import_module("femsr.reconstruct")
    chosen = []

    class Chosen(Exception):
        pass

    def load(model, device):
        chosen.append(model)
        raise Chosen

    monkeypatch.setattr(module, "_load", load)
    lr_ct = scan.lr_image(left_scan[1])
    block = FemurImage(lr_ct.density, lr_ct.pixel_size, lr_ct.femur, {})
    deblurred = scan.lr_image(left_scan[1], psf_fwhm=0.8)
    assert lr_ct.meta["psf_fwhm"] is None and deblurred.meta["psf_fwhm"] == 0.8
    wide = FemurImage(deblurred.density, deblurred.pixel_size, deblurred.femur, {})
    wide.meta.update(deblurred.meta, psf_fwhm=DEBLURRED_MODEL_MAX_FWHM)
    with pytest.raises(ValueError, match="psf_fwhm must be a number of mm or 'auto'"):
        scan.lr_image(left_scan[1], psf_fwhm="wide")
    images = ((lr_ct, None), (lr_ct, "mine.pt"), (block, None), (deblurred, None), (wide, None))
    for image, model in images:
        with pytest.raises(Chosen):
            module.reconstruct(image, model=model)
    assert chosen == [
        module.BUNDLED_SCAN_MODEL,
        "mine.pt",
        None,
        module.BUNDLED_DEBLURRED_MODEL,
        module.BUNDLED_MODEL,
    ]


@pytest.fixture
def tiny_net(tmp_path, monkeypatch, left_scan):
    """femsr.reconstruct's module, with a tiny untrained network loaded for every model, the
    network, and the left femur's scan written to a file."""
    import importlib

    from femsr.model import ModelConfig, build_model

    module = importlib.import_module("femsr.reconstruct")
    net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    monkeypatch.setattr(module, "_loaded", lambda model, device: net)
    ct = tmp_path / "scan.nii.gz"
    scan.write_scan(ct, left_scan[1])
    return module, net, ct


def test_a_deblurred_scan_is_refined_with_the_mass_held_over_the_blurs_width(
    tmp_path, monkeypatch, left_scan, tiny_net
):
    from femsr.refine import blur_block

    module, net, ct = tiny_net
    blocks = []

    class Refined(Exception):
        pass

    def refine(result, density, problem, *, block, **options):
        blocks.append(block)
        raise Refined

    monkeypatch.setattr(module, "refine_density", refine)
    for psf_fwhm in (None, 0.7, 1.0):
        image = scan.lr_image(left_scan[1], psf_fwhm=psf_fwhm)
        with pytest.raises(Refined):
            module.reconstruct(image, model=net, device="cpu", refine=1)
    assert blocks == [1, 1, 2] == [blur_block(f, 0.5) for f in (None, 0.7, 1.0)]
    with pytest.raises(Refined):
        module.reconstruct(image, model=net, device="cpu", refine=1, mass_block=3)
    assert blocks[-1] == 3
    with pytest.raises(ValueError, match="mass_block must be"):
        module.reconstruct(image, model=net, device="cpu", refine=1, mass_block=0)
    # read from a file, by the command too
    for psf_fwhm in (0.7, 1.0):
        with pytest.raises(Refined):
            module.reconstruct_file(ct, tmp_path / "hr.npy", psf_fwhm=psf_fwhm, refine=1)
    assert blocks[-2:] == [1, 2]
    command = ["reconstruct", str(ct), str(tmp_path / "hr.npy"), "--psf-fwhm", "1.0"]
    for given, held in (([], 2), (["--mass-block", "3"], 3)):
        with pytest.raises(Refined):
            cli.main([*command, "--refine", "1", *given])
        assert blocks[-1] == held


def test_a_deblurred_scan_is_refined_longer_and_redrawn_at_a_higher_density_weight(
    tmp_path, monkeypatch, left_scan, tiny_net
):
    from femsr.refine import settings

    module, net, ct = tiny_net
    runs = []

    class Redrawn(Exception):
        pass

    def refine(result, density, problem, *, iterations, **options):
        runs.append(iterations)
        return result

    def redraw(result, density, block, density_weight):
        runs[-1] = (runs[-1], density_weight)
        raise Redrawn

    monkeypatch.setattr(module, "refine_density", refine)
    monkeypatch.setattr(module, "redraw", redraw)
    widths = (None, 0.5, 0.7, 1.0)
    for psf_fwhm in widths:  # a scan of 0.6 mm pixels
        image = scan.lr_image(left_scan[1], psf_fwhm=psf_fwhm)
        with pytest.raises(Redrawn):
            module.reconstruct(image, model=net, device="cpu", refine=True)
    assert runs == [(8, 5.0), (8, 5.0), (12, 7.0), (12, 7.0)] == [settings(f) for f in widths]
    # From finer pixels the blurriest scan is refined as long as a block mean unaveraged, at
    # the scan's weight, and as long as the others averaged.
    fine = scan.lr_image(clinical_scan(left_scan[0], pixel=0.5, fwhm=1.0), psf_fwhm=1.0)
    for tta, run in ((False, (8, 7.0)), (True, (12, 7.0))):
        with pytest.raises(Redrawn):
            module.reconstruct(fine, model=net, device="cpu", tta=tta, refine=True)
        assert runs[-1] == run == settings(1.0, tta=tta, scan_pixel=0.5)
    del runs[-2:]
    with pytest.raises(Redrawn):  # iterations given: the deblurred scan's weight still
        module.reconstruct(image, model=net, device="cpu", refine=3)
    assert runs[-1] == (3, 7.0)
    module.reconstruct(image, model=net, device="cpu", refine=False)
    assert len(runs) == 5
    # the command's --refine without N is the input's default
    command = ["reconstruct", str(ct), str(tmp_path / "hr.npy")]
    for given, run in (
        (["--psf-fwhm", "1.0", "--refine"], (12, 7.0)),
        (["--psf-fwhm", "0.7", "--refine", "4"], (4, 7.0)),
        (["--psf-fwhm", "0.5", "--refine"], (8, 5.0)),
    ):
        with pytest.raises(Redrawn):
            cli.main([*command, *given])
        assert runs[-1] == run

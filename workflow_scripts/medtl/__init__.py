"""medtl: transfer learning strategies for medical imaging, driven by the Snakemake workflow."""

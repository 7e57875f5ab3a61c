"""Science on the line catalogues: metallicities, the MZR, comparison metrics."""

"""One loader per public file layout; each returns a validated `RawDataset`."""

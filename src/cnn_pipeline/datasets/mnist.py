"""MNIST (LeCun, Cortes and Burges): 70,000 handwritten digits, 28x28 grayscale.

Pinned by the SHA-256 of each file's decompressed content (identical to the canonical
MNIST), so a mirror that recompressed the files passes, and by the canonical .gz MD5s.
"""

from cnn_pipeline.datasets.idx import IdxDataset, dataset, idx_file

MNIST = IdxDataset(
    train_images=idx_file(
        "train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    train_labels=idx_file(
        "train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    test_images=idx_file(
        "t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    test_labels=idx_file(
        "t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    class_names=tuple(str(digit) for digit in range(10)),
)

DATASET = dataset(MNIST)

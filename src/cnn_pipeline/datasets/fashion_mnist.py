"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grayscale images of
Zalando's articles in 10 classes, a drop-in replacement for MNIST.

Pinned by the MD5s its authors publish for the .gz files. No digest of the decompressed
content is published, so (unlike MNIST) a mirror that recompressed the files is refused.
"""

from cnn_pipeline.datasets.idx import IdxDataset, dataset
from cnn_pipeline.datasets.mirrors import Checksum, RemoteFile

FASHION_MNIST = IdxDataset(
    train_images=RemoteFile(
        "train-images-idx3-ubyte.gz", (Checksum("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),)
    ),
    train_labels=RemoteFile(
        "train-labels-idx1-ubyte.gz", (Checksum("md5", "25c81989df183df01b3e8a0aad5dffbe"),)
    ),
    test_images=RemoteFile(
        "t10k-images-idx3-ubyte.gz", (Checksum("md5", "bef4ecab320f06d8554ea6380940ec79"),)
    ),
    test_labels=RemoteFile(
        "t10k-labels-idx1-ubyte.gz", (Checksum("md5", "bb300cfdad3c16e7a12a480ee83cd310"),)
    ),
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)

DATASET = dataset(FASHION_MNIST)

"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grayscale images of
Zalando's articles in 10 classes, a drop-in replacement for MNIST.

Pinned by the MD5s its authors publish for the .gz files and by the SHA-256 of each file's
decompressed content (computed from the published files, which match those MD5s), so a copy
that was recompressed passes too: Debian's package `dataset-fashion-mnist` installs such
copies under /usr/share/datasets/fashion-mnist/ (same content, another gzip header).
"""

from cnn_pipeline.datasets.idx import IdxDataset, dataset, idx_file

FASHION_MNIST = IdxDataset(
    train_images=idx_file(
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    train_labels=idx_file(
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    test_images=idx_file(
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    test_labels=idx_file(
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        "bb300cfdad3c16e7a12a480ee83cd310",
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

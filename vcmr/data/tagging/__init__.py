"""Music tagging data: annotation parsers (:mod:`.annotations`), the decoded-audio cache
format (:mod:`.cache`), and audio access, datasets and the DataModule (:mod:`.dataset`)."""

from vcmr.data.tagging.annotations import (
    DATASETS,
    PONS2017_TAGS,
    AnnotationFormatError,
    DatasetFilesError,
    TaggingIndex,
    Track,
    build_index,
    parse_mtat_pons2017,
    parse_mtat_won2020,
    parse_mtg_jamendo,
)
from vcmr.data.tagging.dataset import (
    SPLITS,
    AudioStore,
    CacheConfig,
    CropDataset,
    DemoTaggingConfig,
    DropReport,
    TaggingData,
    TaggingDataConfig,
    TaggingDataModule,
    drop_unusable,
    open_tagging_data,
)

__all__ = [
    "DATASETS",
    "PONS2017_TAGS",
    "SPLITS",
    "AnnotationFormatError",
    "AudioStore",
    "CacheConfig",
    "CropDataset",
    "DatasetFilesError",
    "DemoTaggingConfig",
    "DropReport",
    "TaggingData",
    "TaggingDataConfig",
    "TaggingDataModule",
    "TaggingIndex",
    "Track",
    "build_index",
    "drop_unusable",
    "open_tagging_data",
    "parse_mtat_pons2017",
    "parse_mtat_won2020",
    "parse_mtg_jamendo",
]

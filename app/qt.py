"""The only module that imports PySide6: the rest of the app takes Qt names from here."""

from PySide6.QtCore import (QByteArray, QDate, QDateTime, QTime, QEvent, QLocale, QPoint, QObject, QSize, Qt, QThread, QTimer, Signal,
                            Slot)
from PySide6.QtGui import (QAction, QColor, QFont, QFontDatabase, QGuiApplication, QIcon, QImage, QKeySequence,
                           QPainter, QPalette, QPixmap, QTextCharFormat, QTextCursor)
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import (QApplication, QButtonGroup, QCheckBox, QComboBox, QDateEdit, QDialog,
                               QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QFrame, QInputDialog,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QMainWindow, QMenu, QMessageBox, QPlainTextEdit, QProgressBar,
                               QProgressDialog, QPushButton, QRadioButton, QScrollArea, QSlider, QSpinBox,
                               QSplitter, QStatusBar, QSystemTrayIcon, QTabWidget, QTextBrowser,
                               QVBoxLayout, QWidget)

__all__ = [name for name in dir() if name[0].isupper()]

"""What the main job shows the trained demo model: one masked word per language, and sentence pairs.

The fill-mask sentences are the held-out message "Enter a valid integer." of the corpus (the
catalogs' own translations, BSD-licensed; see CORPUS_LICENSES.md): no translation of it was trained
on, so the model has to guess the masked word from the many similar messages it did see. Each entry
is (language, sentence with one `<mask>`, the word that was masked); each masked word is one
piece of the demo model's vocabulary. (As in the reference, the text after `<mask>` starts a new
sentencepiece segment, so a `▁` piece follows the mask where no space did.)
"""

FILL_MASK = [
    ("en", "Enter a <mask> integer.", "valid"),
    ("fr", "Saisissez un <mask> entier valide.", "nombre"),
    ("de", "Bitte eine <mask> Ganzzahl eingeben.", "gültige"),
    ("es", "Introduzca un <mask> entero válido.", "número"),
    ("it", "Inserire un <mask> intero valido.", "numero"),
    ("pt", "Insira um <mask> inteiro válido.", "número"),
    ("nl", "Voer een <mask> geheel getal in.", "geldig"),
    ("ru", "Введите правильное <mask>.", "число"),
    ("uk", "Введіть коректне ціле <mask>.", "число"),
    ("el", "Εισάγετε έναν <mask> ακέραιο.", "έγκυρο"),
    ("ar", "أدخل <mask> صالح.", "رقم"),
    ("fa", "یک <mask> معتبر وارد کنید.", "عدد"),
    ("hi", "एक मान्य पूर्ण <mask> दर्ज करें", "संख्या"),
    ("zh", "<mask>一个有效的整数。", "输入"),
    ("ja", "整数を正しく<mask>。", "入力してください"),
    ("ko", "<mask> 정수를 입력하세요.", "올바른"),
]

# (first, second, related?) sentences of our own writing, in the corpus's domain
SIMILARITY_PAIRS = [
    ("Enter a valid email address.", "Please enter a correct email address.", True),
    ("The page has been deleted.", "This page was removed.", True),
    ("Saisissez une adresse e-mail valide.", "Veuillez saisir une adresse électronique correcte.", True),
    ("Enter a valid email address.", "The page has been deleted.", False),
    ("Saisissez une adresse e-mail valide.", "Cette page a été supprimée.", False),
    ("Введите правильный адрес электронной почты.", "Страница была удалена.", False),
]

# the parity report's batch: four scripts, padded to the longest
PARITY_SENTENCES = [
    "Enter a valid email address.",
    "Введите правильный адрес электронной почты.",
    "أدخل عنوان بريد إلكتروني صالح.",
    "请输入合法的邮件地址。",
]
